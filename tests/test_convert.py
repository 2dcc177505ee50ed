"""`hf-ddpm convert`: converted UNets and our scheduler against outputs of the originals' own code (the fixtures in
tests/fixtures/convert, made as its README says), the written folder, and every refusal."""

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import Timesteps
from safetensors import safe_open
from safetensors.torch import load_file

from hf_ddpm import unet_2d_adm
from hf_ddpm.cli import main
from hf_ddpm.convert import build_unet, convert_unet, original_keys, resolve_flags, scheduler_config
from hf_ddpm.pipeline_ddpm_posterior import DDPMPosteriorPipeline
from hf_ddpm.scheduling_ddpm_posterior import DDPMPosteriorScheduler
from hf_ddpm.unet_2d_adm import ADMUNet2DModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
# each small architecture, and the class that expresses it
UNET_CLASSES = {
    "improved_cifar10": "UNet2DModel",  # scale-shift, 4 heads of one size, attention at 16 and 8, learned sigmas
    "improved_imagenet64_cond": "ADMUNet2DModel",  # 4 heads at 64 and 96 channels, class-conditional
    "improved_lsun": "UNet2DModel",  # one head, no scale-shift, attention at one resolution
    "guided_64_new_order": "UNet2DModel",  # num_head_channels, resblock_updown, new q/k/v order, conditional
    "guided_128_legacy_heads": "ADMUNet2DModel",  # 4 heads at 3 widths, legacy order, resblock_updown
    "guided_512_half_width": "ADMUNet2DModel",  # channel_mult 0.5,...: time sinusoids wider than the first level
}
DIFFUSIONS = [
    "improved_cosine_4000_learned",
    "improved_linear_4000_fixed_large",
    "improved_linear_1000_fixed_small_xstart",
    "guided_linear_1000_learned",
]
CIFAR_FLAGS = ["--image_size", "32", "--num_channels", "32", "--num_res_blocks", "2", "--learn_sigma", "True"]
CIFAR_FLAGS += ["--dropout", "0.3", "--diffusion_steps", "4000", "--noise_schedule", "cosine"]
GUIDED_64_FLAGS = ["--image_size", "64", "--num_channels", "32", "--num_res_blocks", "1", "--attention_resolutions"]
GUIDED_64_FLAGS += ["32,16,8", "--class_cond", "True", "--learn_sigma", "True", "--num_head_channels", "16"]
GUIDED_64_FLAGS += ["--resblock_updown", "True", "--use_new_attention_order", "True", "--noise_schedule", "cosine"]
GUIDED_128_FLAGS = ["--image_size", "128", "--num_channels", "32", "--num_res_blocks", "1", "--attention_resolutions"]
GUIDED_128_FLAGS += ["32,16,8", "--class_cond", "True", "--learn_sigma", "True", "--resblock_updown", "True"]


def deterministic_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The weights the fixtures' originals had: one generator seeded 0 over the keys in sorted order."""
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for key in sorted(shapes):
        shape = shapes[key]
        std = math.prod(shape[1:]) ** -0.5 if len(shape) > 1 else 0.5
        weights[key] = torch.randn(shape, generator=generator) * std
    return {key: weights[key] for key in shapes}  # in the original's order, as its state_dict()


def load_unet_fixture(name: str):
    """The tensors (x, t, y, output...) of a fixture, its source, the original's flags and its keys' shapes."""
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    shapes = {key: tuple(shape) for key, shape in json.loads(metadata["keys"]).items()}
    return load_file(path), metadata["source"], json.loads(metadata["flags"]), shapes


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The fixtures' original weights as .pt files, as the originals save them (a plain state dict)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for name in ("improved_cifar10", "guided_64_new_order", "guided_128_legacy_heads"):
        torch.save(deterministic_weights(load_unet_fixture(name)[3]), folder / f"{name}.pt")
    return folder


def unet_output(unet, tensors: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(tensors["x"], tensors["t"], class_labels=tensors.get("y")).sample


# ---------------------------------------------------------------------------------------------------------------
# The UNet: the original's outputs, to float32 rounding
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNET_CLASSES)
def test_converted_unet_computes_the_originals_outputs(name):
    tensors, source, flags, shapes = load_unet_fixture(name)
    flags = resolve_flags(source, **flags)
    keys = original_keys(build_unet(source, flags), source, flags)
    # every key of the original, with its shape, and nothing else
    assert dict(keys.values()) == shapes
    unet = convert_unet(deterministic_weights(shapes), source, flags)
    assert type(unet).__name__ == UNET_CLASSES[name]
    # ~40 layers of float32 arithmetic in a different order (fused vs split qkv, SDPA vs einsum)
    torch.testing.assert_close(unet_output(unet, tensors), tensors["output"], rtol=1e-5, atol=1e-5)
    if "output_scaled_t" in tensors:  # improved-diffusion's rescale_timesteps: the UNet saw t * 1000 / T
        unet.time_proj.scale = 1000 / flags["diffusion_steps"]
        torch.testing.assert_close(unet_output(unet, tensors), tensors["output_scaled_t"], rtol=1e-5, atol=1e-5)


def test_timestep_scale_on_the_embedding_equals_the_originals_rescaled_timesteps_bit_for_bit():
    """(t * f) * 0.25 in diffusers' Timesteps(scale=0.25) is (t * 0.25) * f of the original, to the last bit."""
    timesteps = torch.arange(4000)
    scaled = Timesteps(128, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000 / 4000)(timesteps)
    original_order = Timesteps(128, flip_sin_to_cos=True, downscale_freq_shift=0)(timesteps.float() * (1000 / 4000))
    assert torch.equal(scaled, original_order)


def test_adm_unet_sets_each_attentions_head_count_and_round_trips(tmp_path):
    tensors, source, flags, shapes = load_unet_fixture("guided_128_legacy_heads")
    unet = convert_unet(deterministic_weights(shapes), source, resolve_flags(source, **flags))
    assert {(a.inner_dim, a.heads) for a in unet.modules() if isinstance(a, Attention)} == {(64, 4), (96, 4), (128, 4)}
    unet.save_pretrained(tmp_path)
    loaded = ADMUNet2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.num_attention_heads == 4
    torch.testing.assert_close(unet_output(loaded, tensors), tensors["output"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# The diffusion: our scheduler against the original's GaussianDiffusion / SpacedDiffusion
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusions():
    path = FIXTURES / "diffusions.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    return load_file(path), {name: json.loads(spec) for name, spec in metadata.items()}


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual.expand_as(expected), expected, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("name", DIFFUSIONS)
def test_scheduler_reproduces_the_originals_diffusion(diffusions, name):
    tensors, specs = diffusions
    flags = resolve_flags(specs[name]["source"], **specs[name]["flags"])
    scheduler = DDPMPosteriorScheduler(**scheduler_config(flags))
    original = {key.removeprefix(name + "."): value for key, value in tensors.items() if key.startswith(name + ".")}
    x_start, x_t, t, model_output = (original[k] for k in ("x_start", "x_t", "t", "model_output"))
    # the schedule: float64 in both, equal after the cast to float32 (the cosine's differs by 1 ulp in 2 betas)
    assert torch.equal(scheduler.alphas_cumprod, original["alphas_cumprod"].float())
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), original["alphas_cumprod"], rtol=1e-7, atol=0)

    mean, variance, log_variance = scheduler.q_posterior_mean_variance(x_start, x_t, t)
    close(mean, original["posterior_mean"])
    close(variance, original["posterior_variance"])
    close(log_variance, original["posterior_log_variance_clipped"])
    step = scheduler.p_mean_variance(model_output, x_t, t, clip_denoised=True)
    close(step["mean"], original["p_mean"])
    close(step["log_variance"], original["p_log_variance"])
    # x_0 from eps at t = T - 1 divides by sqrt(alpha_bar) ~ 0.006: terms of ~150, whose float32 ulp is 1.5e-5
    close(step["pred_original_sample"], original["p_pred_xstart"], atol=2e-5)
    bits = scheduler.vb_terms_bpd(model_output, x_start, x_t, t, clip_denoised=True)
    # the KL terms (t > 0) to float32 rounding; the decoder term (t = 0) differs by design: the original uses a
    # tanh approximation of the normal CDF, ours the exact one (scheduling_ddpm_posterior's
    # discretized_gaussian_log_likelihood)
    torch.testing.assert_close(bits[1:], original["vb_bpd"][1:], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bits[:1], original["vb_bpd"][:1], rtol=2e-2, atol=0)
    close(scheduler.prior_bpd(x_start), original["prior_bpd"])

    # the respaced chain: "linspace" keeps the timesteps of the original's respacing "50", and its reverse steps
    scheduler.set_timesteps(50)
    assert torch.equal(scheduler.timesteps.flip(0), original["respaced_timesteps"])
    kept = original["respaced_timesteps"][original["respaced_index"]]
    step = scheduler.p_mean_variance(model_output, x_t, kept, clip_denoised=True, respaced=True)
    close(step["mean"], original["respaced_p_mean"])
    close(step["log_variance"], original["respaced_p_log_variance"])
    bits = scheduler.vb_terms_bpd(model_output, x_start, x_t, kept, clip_denoised=True, respaced=True)
    torch.testing.assert_close(bits[1:], original["respaced_vb_bpd"][1:], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bits[:1], original["respaced_vb_bpd"][:1], rtol=2e-2, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# The command: the folder it writes, and what it refuses
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["ema_0.9999_500000.pt", "model500000.pt"])
def test_convert_writes_a_pipeline_folder_that_loads(checkpoints, tmp_path, capsys, file_name):
    checkpoint = tmp_path / file_name  # the originals save the EMA and the raw weights alike: one state dict each
    os.link(checkpoints / "improved_cifar10.pt", checkpoint)
    output_dir = tmp_path / "iddpm-cifar10"
    assert main(["convert", "improved-diffusion", str(checkpoint), "--output_dir", str(output_dir), *CIFAR_FLAGS]) == 0
    assert capsys.readouterr().out.strip() == str(output_dir)
    assert sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file()) == [
        "conversion.json",
        "model_index.json",
        "pipeline_ddpm_posterior.py",
        "scheduler/scheduler_config.json",
        "scheduler/scheduling_ddpm_posterior.py",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    pipeline = DDPMPosteriorPipeline.from_pretrained(output_dir)
    tensors = load_unet_fixture("improved_cifar10")[0]
    # the UNet as the pipeline calls it: at t * 1000 / T, as the original's diffusion called it
    torch.testing.assert_close(unet_output(pipeline.unet, tensors), tensors["output_scaled_t"], rtol=1e-5, atol=1e-5)
    config = pipeline.scheduler.config
    assert (config.num_train_timesteps, config.beta_schedule) == (4000, "squaredcos_cap_v2")
    assert (config.variance_type, config.prediction_type, config.timestep_spacing) == (
        "learned_range",
        "epsilon",
        "linspace",
    )
    record = json.loads((output_dir / "conversion.json").read_text())
    assert record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (record["checkpoint"], record["license"]) == (file_name, "MIT")
    # improved-diffusion's rescaled timesteps: the UNet sees t * 1000 / T, in the pipeline's config
    assert json.loads((output_dir / "model_index.json").read_text())["timestep_scale"] == 0.25
    assert pipeline.config.timestep_scale == pipeline.unet.time_proj.scale == 0.25
    assert record["paper_url"] == "https://arxiv.org/abs/2102.09672"
    # every flag of the original, with its default where not given
    assert record["flags"].keys() == resolve_flags("improved-diffusion").keys()
    assert [record["flags"][flag] for flag in ("num_heads", "rescale_timesteps", "dropout", "num_channels")] == [
        4,
        True,
        0.3,
        32,
    ]


def test_convert_writes_the_adm_unet_for_a_head_count_over_different_widths(checkpoints, tmp_path):
    output_dir = tmp_path / "adm-128"
    checkpoint = checkpoints / "guided_128_legacy_heads.pt"
    argv = ["convert", "guided-diffusion", str(checkpoint), "--output_dir", str(output_dir), *GUIDED_128_FLAGS]
    assert main(argv) == 0
    unet = ADMUNet2DModel.from_pretrained(output_dir / "unet").eval()
    tensors = load_unet_fixture("guided_128_legacy_heads")[0]
    torch.testing.assert_close(unet_output(unet, tensors), tensors["output"], rtol=1e-5, atol=1e-5)
    # the ADM UNet travels as remote code beside its config, named in model_index.json as diffusers resolves it
    index = json.loads((output_dir / "model_index.json").read_text())
    assert (index["unet"], index["timestep_scale"]) == (["unet_2d_adm", "ADMUNet2DModel"], 1.0)
    assert (output_dir / "unet" / "unet_2d_adm.py").read_bytes() == Path(unet_2d_adm.__file__).read_bytes()


@pytest.mark.parametrize(
    "fixture, source, flags, message",
    [
        ("improved_cifar10", "improved-diffusion", ["--class_cond", "True"], "label_emb.weight is missing"),
        ("improved_cifar10", "improved-diffusion", ["--learn_sigma", "False"], "out.2.weight has shape [6, 32"),
        (
            "improved_cifar10",
            "improved-diffusion",
            ["--num_channels", "64"],
            "input_blocks.0.0.weight has shape [32, 3",
        ),
        ("improved_cifar10", "improved-diffusion", ["--use_scale_shift_norm", "False"], "emb_layers.1.weight"),
        ("improved_cifar10", "improved-diffusion", ["--attention_resolutions", "16"], "input_blocks.7.1.norm"),
        ("improved_cifar10", "improved-diffusion", ["--num_res_blocks", "3"], "input_blocks.3.0.op.weight"),
        ("guided_64_new_order", "guided-diffusion", ["--class_cond", "False"], "label_emb.weight is not in"),
        ("guided_64_new_order", "guided-diffusion", ["--resblock_updown", "False"], "input_blocks.2.0.in_layers"),
    ],
)
def test_a_checkpoint_that_does_not_match_the_flags_is_refused_in_one_line(
    checkpoints, tmp_path, capsys, fixture, source, flags, message
):
    base = CIFAR_FLAGS if fixture == "improved_cifar10" else GUIDED_64_FLAGS
    output_dir = tmp_path / "out"
    argv = ["convert", source, str(checkpoints / f"{fixture}.pt"), "--output_dir", str(output_dir), *base, *flags]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and f"check {flags[0]}" in error, error
    assert not output_dir.exists()


class RunsCode:
    """Unpickling this creates a folder: a checkpoint that would run code when loaded with pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_refusals(checkpoints, tmp_path, capsys):
    def convert(checkpoint, output_dir=tmp_path / "out", flags=CIFAR_FLAGS):
        code = main(["convert", "improved-diffusion", str(checkpoint), "--output_dir", str(output_dir), *flags])
        error = capsys.readouterr().err
        assert error.count("\n") == 1, error
        return code, error

    marker = tmp_path / "code-ran"
    torch.save({"input_blocks.0.0.weight": torch.zeros(1), "hook": RunsCode(marker)}, tmp_path / "model.pt")
    code, error = convert(tmp_path / "model.pt")
    assert code == 2 and "holds pickled objects other than tensors" in error and not marker.exists()
    assert "weights_only" not in error  # torch's own message advises loading it with weights_only=False

    torch.save({"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}, tmp_path / "opt500000.pt")
    code, error = convert(tmp_path / "opt500000.pt")
    assert code == 2 and "not a model state dict" in error

    # super-resolution models, by name (before loading anything) and by their 6 input channels
    (tmp_path / "64_256_upsampler.pt").write_bytes(b"not even a checkpoint")
    code, error = convert(tmp_path / "64_256_upsampler.pt")
    assert code == 2 and "64_256_upsampler.pt is a super-resolution model" in error
    torch.save({"input_blocks.0.0.weight": torch.zeros(192, 6, 3, 3)}, tmp_path / "model_b.pt")
    code, error = convert(tmp_path / "model_b.pt")
    assert code == 2 and "super-resolution" in error
    (tmp_path / "64x64_classifier.pt").write_bytes(b"")
    code, error = convert(tmp_path / "64x64_classifier.pt")
    assert code == 2 and "classifier" in error

    # a non-empty --output_dir: refused before any work, its file untouched
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, error = convert(checkpoints / "improved_cifar10.pt", output_dir=taken)
    assert code == 2 and "--output_dir" in error and os.listdir(taken) == ["notes.txt"]

    # the current folder, even empty: a failed conversion removed it; "" wrote into it
    (tmp_path / "empty").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path / "empty")
        for output_dir in ("", "."):
            code, error = convert(checkpoints / "improved_cifar10.pt", output_dir=output_dir)
            assert code == 2 and f"--output_dir {output_dir!r}" in error and "holds the current folder" in error
    assert os.listdir(tmp_path / "empty") == []

    code, error = convert(checkpoints / "guided_64_new_order.pt")  # suggested --resblock_updown, a flag it lacks
    assert code == 2 and "check the source: a guided-diffusion checkpoint? (hf-ddpm convert guided-diffusion)" in error
    code, error = convert(tmp_path / "absent.pt")
    assert code == 2 and "absent.pt does not exist" in error
    code, error = convert(tmp_path / "empty")
    assert code == 2 and "empty is not a file" in error

    # damaged weights: NaN converted and sampled to black images with exit 0; non-string keys crashed
    weights = torch.load(checkpoints / "improved_cifar10.pt", weights_only=True)
    torch.save({**weights, "out.2.weight": weights["out.2.weight"] * float("nan")}, tmp_path / "nan.pt")
    code, error = convert(tmp_path / "nan.pt")
    assert code == 2 and "nan.pt is damaged: out.2.weight holds NaN or infinite values" in error
    torch.save({1: torch.zeros(1)}, tmp_path / "int_keys.pt")
    code, error = convert(tmp_path / "int_keys.pt")
    assert code == 2 and "not a model state dict" in error
    assert not (tmp_path / "out").exists()

    # an output folder that is a link is not replaced by a folder; a file written into it meanwhile stays
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    code, error = convert(checkpoints / "improved_cifar10.pt", output_dir=tmp_path / "link")
    assert code == 2 and (tmp_path / "link").is_symlink()
    (tmp_path / "filled").mkdir()
    save_pretrained = DDPMPosteriorPipeline.save_pretrained

    def save_while_a_user_writes(pipeline, folder, **kwargs):
        (tmp_path / "filled" / "notes.txt").write_text("mine")  # another process, meanwhile
        save_pretrained(pipeline, folder, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DDPMPosteriorPipeline, "save_pretrained", save_while_a_user_writes)
        argv = ["convert", "improved-diffusion", str(checkpoints / "improved_cifar10.pt"), "--output_dir"]
        code = main([*argv, str(tmp_path / "filled"), *CIFAR_FLAGS])
    assert code == 0 and (tmp_path / "filled" / "notes.txt").read_text() == "mine"  # replaced with the folder before
    assert (tmp_path / "filled" / "model_index.json").is_file() and (tmp_path / "filled" / "conversion.json").is_file()
    code, error = convert(checkpoints / "improved_cifar10.pt", flags=[*CIFAR_FLAGS, "--image_size", "48"])
    assert code == 2 and "--image_size must be one of 256, 64, 32" in error
    with pytest.raises(SystemExit) as exit_info:  # booleans as the originals parse them: True/False, yes/no, 1/0
        main(["convert", "improved-diffusion", "model.pt", "--output_dir", "x", "--learn_sigma", "maybe"])
    assert exit_info.value.code == 2 and "--learn_sigma: must be True or False, got 'maybe'" in capsys.readouterr().err
    for flag, value, allowed in [  # each of these divided by zero or wrote NaN into config.json
        ("--num_channels", "0", "must be a positive integer, got '0'"),
        ("--num_heads", "0", "must be a positive integer, got '0'"),
        ("--num_heads_upsample", "0", "must be a positive integer or -1, got '0'"),
        ("--dropout", "nan", "must be a number in [0, 1), got 'nan'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", "improved-diffusion", "model.pt", "--output_dir", "x", flag, value])
        assert exit_info.value.code == 2 and f"argument {flag}: {allowed}" in capsys.readouterr().err
    code, error = convert(checkpoints / "improved_cifar10.pt", flags=[*CIFAR_FLAGS, "--attention_resolutions", "0"])
    assert code == 2 and "--attention_resolutions must be comma-separated positive integers, got '0'" in error


def test_a_checkpoint_saved_from_data_parallel_or_named_like_a_classifier_converts(checkpoints, tmp_path):
    """Keys prefixed "module." (a DistributedDataParallel save) were refused naming the wrong flag; a name holding
    "classifier" (cifar10_classifier_free_ema.pt) was refused by its name alone."""
    weights = torch.load(checkpoints / "improved_cifar10.pt", weights_only=True)
    torch.save({f"module.{key}": value for key, value in weights.items()}, tmp_path / "cifar10_classifier_free.pt")
    output_dir = tmp_path / "converted"
    argv = ["convert", "improved-diffusion", str(tmp_path / "cifar10_classifier_free.pt"), "--output_dir"]
    assert main([*argv, str(output_dir), *CIFAR_FLAGS]) == 0
    reference = tmp_path / "reference"
    argv = ["convert", "improved-diffusion", str(checkpoints / "improved_cifar10.pt"), "--output_dir"]
    assert main([*argv, str(reference), *CIFAR_FLAGS]) == 0
    for name in ("diffusion_pytorch_model.safetensors", "config.json"):
        assert (output_dir / "unet" / name).read_bytes() == (reference / "unet" / name).read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# End to end: converted folders load with and without hf_ddpm, compute the originals' numbers, sample, bound, push
# ---------------------------------------------------------------------------------------------------------------

# a small improved-diffusion model (T = 4000 cosine, learned sigmas, rescaled timesteps) and a small class-conditional
# guided-diffusion one (the ADM UNet): (source, flags, the UNet's class, timestep_scale)
END_TO_END = {
    "improved_cifar10": ("improved-diffusion", CIFAR_FLAGS, "UNet2DModel", 0.25),
    "guided_128_legacy_heads": ("guided-diffusion", GUIDED_128_FLAGS, "ADMUNet2DModel", 1.0),
}


@pytest.fixture(scope="module")
def converted(checkpoints, tmp_path_factory):
    """The END_TO_END models, converted by the command into pipeline folders."""
    folders = {}
    for name, (source, flags, _, _) in END_TO_END.items():
        folder = tmp_path_factory.mktemp("converted") / name
        assert main(["convert", source, str(checkpoints / f"{name}.pt"), "--output_dir", str(folder), *flags]) == 0
        folders[name] = folder
    return folders


def original_bounds(name: str) -> dict:
    """The original's terms of the bound of the 4-step chain (tests/fixtures/convert/README.md, `bounds`)."""
    tensors = load_file(FIXTURES / "bounds.safetensors")
    return {key.removeprefix(name + "."): value for key, value in tensors.items() if key.startswith(name + ".")}


def bound_inputs(size: int) -> tuple[torch.Tensor, torch.Generator]:
    """The fixture's 2 images (8-bit levels in [-1, 1]), and the generator that draws the fixture's noise."""
    images = torch.randint(0, 256, (2, 3, size, size), generator=torch.Generator().manual_seed(5)) / 127.5 - 1
    return images, torch.Generator().manual_seed(6)


@pytest.mark.parametrize("name", END_TO_END)
def test_a_converted_folder_computes_the_originals_outputs_and_bound_through_the_pipeline(converted, name):
    source, _, unet_class, timestep_scale = END_TO_END[name]
    pipeline = DDPMPosteriorPipeline.from_pretrained(converted[name])
    pipeline.set_progress_bar_config(disable=True)
    assert type(pipeline.unet).__name__ == unet_class and pipeline.config.timestep_scale == timestep_scale
    tensors = load_unet_fixture(name)[0]
    # the UNet as the pipeline calls it: at t * 1000 / T where the original rescaled its timesteps
    expected = tensors.get("output_scaled_t", tensors["output"])
    torch.testing.assert_close(unet_output(pipeline.unet, tensors), expected, rtol=1e-5, atol=1e-5)

    # the bound of the 4-step chain at the fixture's noise, term by term: the pipeline's own UNet calls
    original = original_bounds(name)
    images, generator = bound_inputs(pipeline.unet.config.sample_size)
    labels = original.get("y")
    bound = pipeline.bits_per_dim(images, generator, batch_size=8, num_inference_steps=4, class_labels=labels)
    assert torch.equal(bound.timesteps[0], original["timesteps"])
    torch.testing.assert_close(bound.vb_bpd[:, 1:].float(), original["vb_bpd"][:, 1:], rtol=1e-5, atol=0)
    # the decoder term differs by design (the original's tanh approximation of the normal CDF, our exact one)
    torch.testing.assert_close(bound.vb_bpd[:, :1].float(), original["vb_bpd"][:, :1], rtol=2e-3, atol=0)
    torch.testing.assert_close(bound.prior_bpd.float(), original["prior_bpd"], rtol=1e-6, atol=0)

    # respaced sampling, a few steps; class labels drawn from the generator when omitted, as the originals do
    images = pipeline(
        batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert images.images.shape == (2, 3, *(2 * [pipeline.unet.config.sample_size])) and images.images.isfinite().all()
    if labels is not None:
        generator = torch.Generator().manual_seed(0)
        drawn = torch.randint(1000, (2,), generator=generator)
        again = pipeline(
            batch_size=2, num_inference_steps=3, generator=generator, class_labels=drawn, output_type="pt"
        )
        assert torch.equal(again.images, images.images)


REMOTE_CODE_SCRIPT = """
    import sys
    sys.modules["hf_ddpm"] = None  # hf_ddpm must not be importable in this process
    import torch
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file, save_file

    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert not type(pipe).__module__.startswith("hf_ddpm"), type(pipe)
    inputs = load_file(sys.argv[2])
    with torch.no_grad():
        output = pipe.unet(inputs["x"], inputs["t"], class_labels=inputs.get("y")).sample
    generator = torch.Generator().manual_seed(0)
    images = pipe(batch_size=2, num_inference_steps=3, generator=generator, output_type="pt").images
    classes = {"unet": type(pipe.unet).__name__, "scheduler": type(pipe.scheduler).__name__}
    metadata = {**classes, "timestep_scale": str(pipe.config.timestep_scale)}
    save_file({"output": output, "images": images}, sys.argv[3], metadata=metadata)
"""


@pytest.mark.parametrize("name", END_TO_END)
def test_a_converted_folder_loads_with_diffusers_alone_and_computes_the_same(converted, name, tmp_path):
    _, _, unet_class, timestep_scale = END_TO_END[name]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REMOTE_CODE_SCRIPT), str(converted[name])]
        + [str(FIXTURES / f"{name}.safetensors"), str(tmp_path / "out.safetensors")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(tmp_path / "out.safetensors", "pt") as f:
        metadata = f.metadata()
    assert (metadata["unet"], metadata["scheduler"]) == (unet_class, "DDPMPosteriorScheduler")
    assert float(metadata["timestep_scale"]) == timestep_scale
    remote = load_file(tmp_path / "out.safetensors")
    tensors = load_unet_fixture(name)[0]
    torch.testing.assert_close(
        remote["output"], tensors.get("output_scaled_t", tensors["output"]), rtol=1e-5, atol=1e-5
    )
    ours = DDPMPosteriorPipeline.from_pretrained(converted[name])
    ours.set_progress_bar_config(disable=True)
    images = ours(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(remote["images"], images.images)


def test_a_converted_folder_pushes_with_a_card_naming_the_original(converted, hub_repo_id, tmp_path, capsys):
    from huggingface_hub import HfApi, hf_hub_download

    folder = converted["guided_128_legacy_heads"]
    assert main(["push", str(folder), hub_repo_id]) == 0
    files = set(HfApi().list_repo_files(hub_repo_id))
    assert {"conversion.json", "unet/unet_2d_adm.py", "scheduler/scheduling_ddpm_posterior.py"} <= files
    card = Path(hf_hub_download(hub_repo_id, "README.md")).read_text()
    record = json.loads((folder / "conversion.json").read_text())
    assert "license: mit" in card and "class-conditional" in card
    for fact in ("guided_128_legacy_heads.pt", record["sha256"], "https://arxiv.org/abs/2105.05233"):
        assert fact in card, fact
    assert "https://github.com/openai/guided-diffusion" in card and "Diffusion Models Beat GANs" in card
    # pulled, it loads with diffusers alone: the ADM UNet's module came along
    assert main(["pull", hub_repo_id, "--local-dir", str(tmp_path / "pulled")]) == 0
    assert (tmp_path / "pulled" / "unet" / "unet_2d_adm.py").read_bytes() == (
        folder / "unet" / "unet_2d_adm.py"
    ).read_bytes()


def test_eval_bpd_and_sample_with_class_labels_run_on_converted_folders(converted, tmp_path, capsys):
    folder = tmp_path / "iddpm"  # eval writes eval_results.json beside the model
    folder.mkdir()
    for path in converted["improved_cifar10"].rglob("*"):
        if path.is_file():
            (folder / path.relative_to(converted["improved_cifar10"])).parent.mkdir(exist_ok=True)
            (folder / path.relative_to(converted["improved_cifar10"])).write_bytes(path.read_bytes())
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    for index, image in enumerate(pixels):
        PIL.Image.fromarray(image).save(tmp_path / "images" / f"{index}.png")
    argv = [
        "eval",
        str(folder),
        "--metric",
        "bpd",
        "--train_data_dir",
        str(tmp_path / "images"),
        "--num_timesteps",
        "5",
    ]
    assert main(argv) == 0
    result = json.loads((folder / "eval_results.json").read_text())["bits_per_dim"]
    pipeline = DDPMPosteriorPipeline.from_pretrained(folder)
    expected = pipeline.bits_per_dim(pixels, torch.Generator().manual_seed(0), num_timesteps=5, show_progress=False)
    assert result["num_images"] == 4 and result["value"] == pytest.approx(float(expected.bpd.mean()), rel=1e-6)

    # sample: the labels taken in turn for the images; refused for an unconditional model or out of range
    guided, output = converted["guided_128_legacy_heads"], tmp_path / "samples"
    argv = ["sample", str(guided), "--num_images", "3", "--num_inference_steps", "2", "--output_dir", str(output)]
    assert main([*argv, "--class_labels", "1", "207"]) == 0
    pipeline = DDPMPosteriorPipeline.from_pretrained(guided)
    generator = torch.Generator().manual_seed(0)
    expected = pipeline(3, generator, num_inference_steps=2, class_labels=[1, 207, 1], output_type="np").images
    saved = np.load(output / "samples.npz")
    np.testing.assert_array_equal(saved["images"], (expected * 255).round().astype(np.uint8))
    assert saved["class_labels"].tolist() == [1, 207, 1]  # each image's class, with the images
    assert main([*argv[:-1], str(tmp_path / "random")]) == 0  # drawn classes are recorded too
    drawn = pipeline(3, torch.Generator().manual_seed(0), num_inference_steps=2, output_type="np").class_labels
    assert np.load(tmp_path / "random" / "samples.npz")["class_labels"].tolist() == drawn.tolist()
    capsys.readouterr()
    for model, labels, message in [
        (folder, ["3"], "--class_labels needs a class-conditional model"),
        (guided, ["1", "1000"], "--class_labels must lie in [0, 1000), got 1 1000"),
        (guided, ["1"] * 17, "--class_labels gives 17 classes for --num_images 16"),
    ]:
        assert main(["sample", str(model), "--output_dir", str(tmp_path / "refused"), "--class_labels", *labels]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error
