# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""GPU training and sampling throughput: the CIFAR-10 preset through our loop and through a plain diffusers loop.

On a CUDA machine (one process, one device):

    python benchmarks/gpu_train.py --output benchmarks/results/gpu_train

trains the CIFAR-10 preset (Ho et al.'s 35.7M-parameter UNet, 32x32 RGB, batch 128, bf16) for `--steps` timed steps
with each loop, in alternating rounds, and prints for each: images/s, peak device memory, FLOPs per step (counted with
`torch.utils.flop_counter.FlopCounterMode` on one step: the UNet's forward and backward) and the model FLOP
utilisation (achieved FLOP/s over the device's peak for the precision; `--peak_tflops` to give it). Then it samples
`--num_samples` images (1,000) at `--sampling_steps` (100) with our pipeline and prints images/s.

    ours   hf_ddpm.training's step (`train_step`: hybrid loss with learned variances, clipping, fused AdamW, EMA, the
           non-finite check, loss sums on the device), with `--speed_flags` if given (e.g. "--channels_last
           --torch_compile", as one string);
    plain  the loop of diffusers' training tutorial: the same UNet (L_simple: no variance channels), batch and
           precision (autocast), `DDPMScheduler.add_noise`, MSE on the noise, clipping, `torch.optim.AdamW`.

The images are random, decoded once and held on the host (throughput does not depend on their content; no download).
`--tiny` runs the same code on a tiny UNet at 8x8 on the CPU in seconds (CI keeps the script working).
"""

import argparse
import resource
import statistics
import time

import datasets
import PIL.Image
import torch
import torch.nn.functional as F
from _results import report_results  # benchmarks/ is on sys.path: these run as scripts
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from hf_ddpm import DDPMPosteriorPipeline
from hf_ddpm.training import data, parse_args
from hf_ddpm.training.loop import build_accelerator, build_components, build_dataloader, train_step
from hf_ddpm.training.metrics import LossMeter

# dense peak TFLOP/s by device name and compute precision (vendor datasheets; SXM parts)
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "A10G": {"bf16": 70.0, "tf32": 35.0, "fp32": 31.2},
}


def parse_benchmark_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="A tiny UNet at 8x8 on the CPU: the CI smoke run.")
    parser.add_argument("--batch_size", type=int, default=None, help="Images per step (default 128; --tiny: 8).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per loop (default 200; --tiny: 2).")
    parser.add_argument("--rounds", type=int, default=None, help="Alternating rounds (default 3; --tiny: 1).")
    parser.add_argument("--warmup_steps", type=int, default=None, help="Untimed steps first (default 20; tiny 1).")
    parser.add_argument(
        "--mixed_precision", choices=("no", "bf16"), default=None, help="Both loops (default: bf16 on CUDA)."
    )
    parser.add_argument(
        "--speed_flags",
        type=str.split,
        default=[],
        help='Training flags for our loop only, as one string: --speed_flags="--channels_last --torch_compile".',
    )
    parser.add_argument("--num_samples", type=int, default=None, help="Images to sample (default 1000; tiny 4).")
    parser.add_argument("--sampling_steps", type=int, default=None, help="Sampling steps (default 100; tiny 4).")
    parser.add_argument("--peak_tflops", type=float, default=None, help="The device's peak, for the MFU.")
    parser.add_argument("--output", default=None, help="Write OUTPUT.json and OUTPUT.md too.")
    bench = parser.parse_args()
    defaults = {"batch_size": (128, 8), "steps": (200, 2), "rounds": (3, 1), "warmup_steps": (20, 1)}
    defaults.update({"num_samples": (1000, 4), "sampling_steps": (100, 4)})
    for name, (full, tiny) in defaults.items():
        if getattr(bench, name) is None:
            setattr(bench, name, tiny if bench.tiny else full)
    if not bench.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark is for a GPU (use --tiny for the CPU smoke run)")
    if bench.mixed_precision is None:
        bench.mixed_precision = "bf16" if torch.cuda.is_available() and not bench.tiny else "no"
    return bench


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_ours(bench: argparse.Namespace):
    """Our loop's components and step, fed by our dataloader over random images."""
    preset = ["--model_preset", "tiny", "--resolution", "8", "--channels", "3"] if bench.tiny else []
    preset = preset or ["--model_preset", "cifar10"]
    flags = [*preset, "--train_batch_size", str(bench.batch_size), "--mixed_precision", bench.mixed_precision]
    flags += ["--device", "cpu" if bench.tiny else "cuda", "--logger", "none", "--max_train_steps", "100000"]
    flags += ["--ddpm_num_inference_steps", str(bench.sampling_steps), "--random_flip", *bench.speed_flags]
    args = parse_args(flags)
    accelerator = build_accelerator(args)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (bench.batch_size * 8, 3, args.resolution, args.resolution), generator=generator)
    stored = datasets.Dataset.from_dict(
        {"image": [PIL.Image.fromarray(x.permute(1, 2, 0).byte().numpy()) for x in images]}
    )
    dataset = data.ImageDataset(stored, "image", args, in_memory=True)
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    c, dataloader = build_components(args, accelerator, dataloader)
    meter, count = LossMeter(args.ddpm_num_steps), [0]

    def batches():
        while True:
            yield from dataloader

    source = batches()

    def step():
        timesteps, terms = train_step(c, next(source), count[0])
        meter.add(terms, timesteps)
        count[0] += 1

    return args, c, images, step


def build_plain(args, c, images: torch.Tensor, bench: argparse.Namespace):
    """The diffusers tutorial's loop on the same UNet architecture, batch and precision."""
    device = c.accelerator.device
    config = dict(c.accelerator.unwrap_model(c.unet).config)
    torch.manual_seed(0)
    model = UNet2DModel.from_config({**config, "out_channels": config["in_channels"]}).to(device)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule="squaredcos_cap_v2")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    dataset = torch.utils.data.TensorDataset(data.to_model_space(images))
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=bench.batch_size, shuffle=True, drop_last=True, pin_memory=device.type == "cuda"
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bench.mixed_precision == "bf16")

    def batches():
        while True:
            yield from dataloader

    source = batches()

    def step():
        (clean_images,) = next(source)
        clean_images = clean_images.to(device, non_blocking=True)
        noise = torch.randn_like(clean_images)
        timesteps = torch.randint(0, args.ddpm_num_steps, (clean_images.shape[0],), device=device)
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        with autocast:
            noise_pred = model(noisy_images, timesteps, return_dict=False)[0]
        loss = F.mse_loss(noise_pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def flops_per_step(step) -> int:
    """FLOPs of one call of `step` (matrix multiplications and convolutions, forward and backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()  # one more training step: the loop's state moves on, as in training
    return counter.get_total_flops()


def peak_tflops(bench: argparse.Namespace, device: torch.device) -> float | None:
    if bench.peak_tflops is not None:
        return bench.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    precision = "bf16" if bench.mixed_precision == "bf16" else "fp32"
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def time_loops(loops: dict, bench: argparse.Namespace, device: torch.device) -> dict:
    """Alternating rounds of `--steps` steps per loop; per loop the median seconds per step and peak memory."""
    for step in loops.values():
        for _ in range(bench.warmup_steps):
            step()
    seconds, peak_memory = {name: [] for name in loops}, {}
    for _ in range(bench.rounds):
        for name, step in loops.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(bench.steps):
                step()
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / bench.steps)
            if device.type == "cuda":
                peak_memory[name] = max(peak_memory.get(name, 0), torch.cuda.max_memory_allocated(device))
    return {name: statistics.median(values) for name, values in seconds.items()}, peak_memory


def time_sampling(args, c, bench: argparse.Namespace, device: torch.device) -> float:
    """Images/s of our pipeline drawing `--num_samples` images at `--sampling_steps` steps (one batch)."""
    unet = c.accelerator.unwrap_model(c.unet).eval()
    pipeline = DDPMPosteriorPipeline(unet=unet, scheduler=c.noise_scheduler)
    pipeline.set_progress_bar_config(disable=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bench.mixed_precision == "bf16")
    generator = torch.Generator(device).manual_seed(0)
    with autocast:
        pipeline(batch_size=2, num_inference_steps=2, output_type="pt", generator=generator)  # warm up
        synchronize(device)
        start = time.perf_counter()
        pipeline(
            batch_size=bench.num_samples,
            num_inference_steps=bench.sampling_steps,
            output_type="pt",
            generator=generator,
        )
        synchronize(device)
    return bench.num_samples / (time.perf_counter() - start)


def main() -> None:
    bench = parse_benchmark_args()
    if bench.tiny:
        torch.set_num_threads(1)
    args, c, images, our_step = build_ours(bench)
    device = c.accelerator.device
    plain_model, plain_step = build_plain(args, c, images, bench)
    loops = {"ours": our_step, "plain": plain_step}
    flops = {name: flops_per_step(step) for name, step in loops.items()}
    seconds, peak_memory = time_loops(loops, bench, device)
    peak = peak_tflops(bench, device)
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": args.model_preset,
        "resolution": args.resolution,
        "parameters": sum(p.numel() for p in c.unet.parameters()),
        "batch_size": bench.batch_size,
        "mixed_precision": bench.mixed_precision,
        "speed_flags": bench.speed_flags,
        "steps_per_round": bench.steps,
        "rounds": bench.rounds,
        "torch": torch.__version__,
        "peak_tflops": peak,
        "loops": {},
    }
    for name in loops:
        achieved = flops[name] / seconds[name] / 1e12
        results["loops"][name] = {
            "images_per_second": bench.batch_size / seconds[name],
            "ms_per_step": seconds[name] * 1000,
            "peak_memory_gib": peak_memory[name] / 2**30 if name in peak_memory else None,
            "flops_per_step": flops[name],
            "achieved_tflops": achieved,
            "mfu": achieved / peak if peak else None,
        }
    results["ratio_ours_to_plain"] = seconds["plain"] / seconds["ours"]
    results["process_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    results["sampling"] = {
        "num_samples": bench.num_samples,
        "steps": bench.sampling_steps,
        "images_per_second": time_sampling(args, c, bench, device),
    }
    report_results(bench.output, results, format_report(results))


def format_report(r: dict) -> str:
    lines = [
        f"# Training throughput on {r['device']}: {r['preset']} preset ({r['parameters'] / 1e6:.2f}M parameters),"
        f" {r['resolution']}x{r['resolution']}",
        "",
        f"batch {r['batch_size']}, mixed precision {r['mixed_precision']}, our speed flags: "
        f"{' '.join(r['speed_flags']) or 'none'}; median of {r['rounds']} alternating rounds x"
        f" {r['steps_per_round']} steps; torch {r['torch']}; peak {r['peak_tflops'] or 'unknown'} TFLOP/s",
        "",
        "| loop | images/s | ms/step | peak memory (GiB) | GFLOP/step | achieved TFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, loop in r["loops"].items():
        memory = f"{loop['peak_memory_gib']:.2f}" if loop["peak_memory_gib"] is not None else "n/a (CPU)"
        mfu = f"{loop['mfu']:.1%}" if loop["mfu"] is not None else "n/a"
        lines.append(
            f"| {name} | {loop['images_per_second']:.1f} | {loop['ms_per_step']:.1f} | {memory} |"
            f" {loop['flops_per_step'] / 1e9:.2f} | {loop['achieved_tflops']:.3f} | {mfu} |"
        )
    sampling = r["sampling"]
    lines += [
        "",
        f"ours/plain images/s: {r['ratio_ours_to_plain']:.3f}; process peak RSS {r['process_peak_rss_gib']:.2f} GiB",
        f"sampling: {sampling['num_samples']} images at {sampling['steps']} steps:"
        f" {sampling['images_per_second']:.1f} images/s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
