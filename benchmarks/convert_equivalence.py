"""`hf-ddpm convert` against the originals' own code, at the released architectures' real sizes, random weights.

    python benchmarks/convert_equivalence.py --improved_diffusion PATH --guided_diffusion PATH [--only NAME ...]

PATH: a checkout of openai/improved-diffusion (resp. guided-diffusion); their code is imported from there at run
time, never copied. For each released checkpoint's flags (as the READMEs print them) it builds the original model
with the original's `create_model_and_diffusion` (PyTorch's default initialisation, the zero-initialised output
convolutions re-initialised so that every layer counts), converts its state dict with `hf_ddpm.convert`, and prints
the largest differences, batch 1, at t = 0, T/2 and T - 1 (class labels 0, 500, 999 where conditional):
  - of the UNet outputs (the original called as its diffusion calls it: at t * 1000 / T where rescale_timesteps;
    ours with `unet.time_proj.scale` = 1000 / T);
  - of one reverse step, the original's `p_mean_variance` against our scheduler's, each fed its own UNet's output;
  - of the bound's terms at fixed x_0, x_t (`_vb_terms_bpd` against our `vb_terms_bpd`), relative: the KL terms
    (t > 0) and the decoder term (t = 0), which differs by design (the original's tanh approximation of the normal
    CDF, our exact CDF).
The originals run in float32 (use_fp16 only changes their compute dtype; the converted weights are float32).
Writes benchmarks/results/convert_equivalence.{json,md}, updated after each model.
"""

import argparse
import gc
import sys
import time

import torch

from hf_ddpm.cli import build_parser
from hf_ddpm.convert import convert_unet, resolve_flags, scheduler_config
from hf_ddpm.scheduling_ddpm_posterior import DDPMPosteriorScheduler

sys.path.insert(0, "benchmarks")
from _results import report_results  # noqa: E402

# name: (source, MODEL_FLAGS and DIFFUSION_FLAGS as the source's README prints them for the released checkpoint)
RELEASED = {
    "iddpm-cifar10": (
        "improved-diffusion",
        "--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3"
        " --diffusion_steps 4000 --noise_schedule cosine",
    ),
    "iddpm-imagenet64": (
        "improved-diffusion",
        "--image_size 64 --num_channels 128 --num_res_blocks 3 --learn_sigma True"
        " --diffusion_steps 4000 --noise_schedule cosine",
    ),
    "iddpm-imagenet64-cond": (
        "improved-diffusion",
        "--image_size 64 --num_channels 192 --num_res_blocks 3 --learn_sigma True --class_cond True"
        " --diffusion_steps 4000 --noise_schedule cosine --rescale_learned_sigmas False --rescale_timesteps False",
    ),
    "iddpm-lsun-bedroom": (
        "improved-diffusion",
        "--image_size 256 --num_channels 128 --num_res_blocks 2 --num_heads 1 --learn_sigma True"
        " --use_scale_shift_norm False --attention_resolutions 16"
        " --diffusion_steps 1000 --noise_schedule linear --rescale_learned_sigmas False --rescale_timesteps False",
    ),
    "adm-64x64": (
        "guided-diffusion",
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 --image_size 64"
        " --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 --num_res_blocks 3"
        " --resblock_updown True --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True",
    ),
    "adm-128x128": (
        "guided-diffusion",
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 --learn_sigma True"
        " --noise_schedule linear --num_channels 256 --num_heads 4 --num_res_blocks 2 --resblock_updown True"
        " --use_fp16 True --use_scale_shift_norm True",
    ),
    "adm-256x256": (
        "guided-diffusion",
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 256 --learn_sigma True"
        " --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True"
        " --use_fp16 True --use_scale_shift_norm True",
    ),
    # also the LSUN models' architecture (they differ in --dropout 0.1 only)
    "adm-256x256-uncond": (
        "guided-diffusion",
        "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256"
        " --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2"
        " --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    ),
    "adm-512x512": (
        "guided-diffusion",
        "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 --learn_sigma True"
        " --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True"
        " --use_fp16 False --use_scale_shift_norm True",
    ),
}


def our_flags(source: str, model_flags: str) -> dict:
    """The flags as `hf-ddpm convert` parses them."""
    args = build_parser().parse_args(["convert", source, "x.pt", "--output_dir", "x", *model_flags.split()])
    return {flag: getattr(args, flag) for flag in resolve_flags(source)}


def original_model_and_diffusion(script_util, model_flags: str):
    """The original's model and diffusion, its flags parsed by its own argparse helpers."""
    parser = argparse.ArgumentParser()
    defaults = script_util.model_and_diffusion_defaults()
    script_util.add_dict_to_argparser(parser, defaults)
    args = script_util.args_to_dict(parser.parse_args(model_flags.split()), defaults.keys())
    if "use_fp16" in args:  # float32 compute: the flag sets the original's compute dtype, not its weights'
        args["use_fp16"] = False
    torch.manual_seed(0)
    model, diffusion = script_util.create_model_and_diffusion(**args)
    for module in model.modules():  # the zero-initialised output layers, re-initialised as their siblings
        weight = getattr(module, "weight", None)
        if weight is not None and hasattr(module, "reset_parameters") and not weight.detach().any():
            module.reset_parameters()
    return model.eval(), diffusion


def compare(name: str, source: str, model_flags: str, script_util) -> dict:
    start = time.perf_counter()
    model, diffusion = original_model_and_diffusion(script_util, model_flags)
    flags = our_flags(source, model_flags)
    unet = convert_unet(model.state_dict(), source, flags)
    steps = flags["diffusion_steps"]
    unet.time_proj.scale = 1000 / steps if flags["rescale_timesteps"] else 1.0
    scheduler = DDPMPosteriorScheduler(**scheduler_config(flags))
    wrapped = diffusion._wrap_model(model)  # the model as the original's diffusion calls it
    generator = torch.Generator().manual_seed(0)
    size = flags["image_size"]
    x_start = torch.randint(0, 256, (1, 3, size, size), generator=generator).float() / 127.5 - 1
    noise = torch.randn(1, 3, size, size, generator=generator)
    row = {"source": source, "class": type(unet).__name__, "parameters": sum(p.numel() for p in unet.parameters())}
    row.update(unet=0.0, unet_scale=0.0, mean=0.0, log_variance=0.0, kl=0.0, kl_relative=0.0, decoder_relative=0.0)
    for t_value, label in ((0, 0), (steps // 2, 500), (steps - 1, 999)):
        t = torch.tensor([t_value])
        kwargs = {"y": torch.tensor([label])} if flags["class_cond"] else {}
        x_t = diffusion.q_sample(x_start, t, noise=noise)
        with torch.no_grad():
            theirs = wrapped(x_t, t, **kwargs)
            ours = unet(x_t, t, class_labels=kwargs.get("y")).sample
            fixed = lambda *args, output=theirs, **kwargs: output  # noqa: E731 (the original's step, its UNet's output)
            step = diffusion.p_mean_variance(fixed, x_t, t, clip_denoised=True)
            bits = diffusion._vb_terms_bpd(fixed, x_start, x_t, t, clip_denoised=True)["output"]
        our_step = scheduler.p_mean_variance(ours, x_t, t, clip_denoised=True)
        our_bits = scheduler.vb_terms_bpd(ours, x_start, x_t, t, clip_denoised=True)
        row["unet"] = max(row["unet"], (ours - theirs).abs().max().item())
        row["unet_scale"] = max(row["unet_scale"], theirs.abs().max().item())
        row["mean"] = max(row["mean"], (our_step["mean"] - step["mean"]).abs().max().item())
        log_variance = our_step["log_variance"].expand_as(step["log_variance"]) - step["log_variance"]
        row["log_variance"] = max(row["log_variance"], log_variance.abs().max().item())
        relative = ((our_bits - bits).abs() / bits.abs()).item()
        key = "decoder_relative" if t_value == 0 else "kl_relative"
        row[key] = max(row[key], relative)
        if t_value > 0:
            row["kl"] = max(row["kl"], (our_bits - bits).abs().item())
        row.setdefault("bits_per_t", []).append({"t": t_value, "original": bits.item(), "ours": our_bits.item()})
    row["seconds"] = time.perf_counter() - start
    print(name, row, flush=True)
    return row


def report(results: dict, command: str) -> str:
    lines = [
        f"command: {command}",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch 1, t = 0, T/2, T - 1",
        "",
        "| model | class | parameters | max abs diff UNet (max abs output) | reverse step: mean, log-variance"
        " | bound terms t > 0: abs. (rel.) | decoder t = 0 (rel.) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        lines.append(
            f"| {name} | {row['class']} | {row['parameters'] / 1e6:.0f}M | {row['unet']:.2e} ({row['unet_scale']:.2f})"
            f" | {row['mean']:.2e}, {row['log_variance']:.2e} | {row['kl']:.1e} ({row['kl_relative']:.1e})"
            f" | {row['decoder_relative']:.1e} | {row['seconds']:.0f} |"
        )
    if results["skipped"]:
        lines += ["", f"skipped: {', '.join(results['skipped'])}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--improved_diffusion", required=True, help="a checkout of openai/improved-diffusion")
    parser.add_argument("--guided_diffusion", required=True, help="a checkout of openai/guided-diffusion")
    parser.add_argument("--only", nargs="+", choices=list(RELEASED), help="these models only (default all)")
    parser.add_argument("--output", default="benchmarks/results/convert_equivalence", help="results path stem")
    args = parser.parse_args()
    sys.path[:0] = [args.improved_diffusion, args.guided_diffusion]
    from guided_diffusion import script_util as guided
    from improved_diffusion import script_util as improved

    script_utils = {"improved-diffusion": improved, "guided-diffusion": guided}
    command = "python " + " ".join(sys.argv)
    chosen = args.only or list(RELEASED)
    results = {"command": command, "models": {}, "skipped": [name for name in RELEASED if name not in chosen]}
    for name in chosen:
        source, model_flags = RELEASED[name]
        results["models"][name] = compare(name, source, model_flags, script_utils[source])
        gc.collect()
        report_results(args.output, results, report(results, command))


if __name__ == "__main__":
    main()
