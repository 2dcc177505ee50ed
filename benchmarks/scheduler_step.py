"""Side by side, in one run: our scheduler step and pipeline against diffusers' DDPMScheduler and DDPMPipeline.

    python benchmarks/scheduler_step.py            # batch 64x3x32x32, 1000 steps, 3 interleaved rounds

Prints medians and ratios, and writes the same lines, under the command and thread count, to --output (default
benchmarks/results/scheduler_step.txt), the file the README quotes. The noise draw (torch.randn with the caller's
generator) must stay identical to diffusers' so that images stay identical; it is timed separately, and so is the
rest of our step.
"""

import argparse
import os
import statistics
import sys
import time

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler


def time_steps(scheduler, model_output, sample, num_steps: int) -> float:
    """Median seconds of one `step` over a full chain of `num_steps` timesteps."""
    generator = torch.Generator().manual_seed(0)
    durations = []
    for t in range(num_steps - 1, -1, -1):
        start = time.perf_counter()
        scheduler.step(model_output, t, sample, generator=generator)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def time_noise(sample, num_steps: int) -> float:
    generator = torch.Generator().manual_seed(0)
    durations = []
    for _ in range(num_steps):
        start = time.perf_counter()
        torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def max_step_difference(shape, num_steps: int) -> float:
    """Largest |ours - diffusers| of prev_sample over a chain fed with the same inputs and generators (t > 10)."""
    ours, theirs = DDPMPosteriorScheduler(num_train_timesteps=num_steps), DDPMScheduler(num_train_timesteps=num_steps)
    sample = torch.randn(shape)
    g_ours, g_theirs = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    worst = 0.0
    for t in range(num_steps - 1, -1, -1):
        model_output = 0.3 * sample + 0.5 * torch.randn(shape)
        mine = ours.step(model_output, t, sample, generator=g_ours).prev_sample
        sample = theirs.step(model_output, t, sample, generator=g_theirs).prev_sample
        if t > 10:  # below, diffusers' float32 betas lose digits (see tests/test_scheduler.py)
            worst = max(worst, (mine - sample).abs().max().item())
    return worst


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


class UNetTimer:
    """Accumulates the wall time spent inside the UNet's forward (pre/post forward hooks)."""

    def __init__(self, unet):
        self.total = 0.0
        unet.register_forward_pre_hook(self._start)
        unet.register_forward_hook(self._stop)

    def _start(self, module, args):
        self._began = time.perf_counter()

    def _stop(self, module, args, output):
        self.total += time.perf_counter() - self._began


def time_pipeline(pipe, timer: UNetTimer, batch_size: int, num_steps: int) -> tuple[float, float]:
    """(total seconds, seconds inside the UNet) of one pipeline call."""
    pipe.set_progress_bar_config(disable=True)
    timer.total = 0.0
    start = time.perf_counter()
    pipe(
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=num_steps,
        output_type="np",
    )
    return time.perf_counter() - start, timer.total


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scheduler_step.txt")
lines: list[str] = []


def report(*parts) -> None:
    """Print a line and keep it for the results file."""
    line = " ".join(str(part) for part in parts)
    print(line, flush=True)
    lines.append(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=RESULTS, help="the results file (default benchmarks/results/...)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_steps", type=int, default=1000)
    parser.add_argument("--pipeline_steps", type=int, default=100, help="inference steps of the pipeline comparison")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    report(f"command: python benchmarks/scheduler_step.py {' '.join(sys.argv[1:])}".rstrip())
    shape = (args.batch_size, 3, 32, 32)
    torch.manual_seed(0)
    sample, model_output = torch.randn(shape), torch.randn(shape)
    ours, theirs = DDPMPosteriorScheduler(), DDPMScheduler()
    report(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {shape}, {args.num_steps} steps")
    report(
        f"max |prev_sample ours - diffusers| over a chain (t > 10): {max_step_difference(shape, args.num_steps):.2e}"
    )

    step_ours, step_theirs, noise = [], [], []
    for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
        step_theirs.append(time_steps(theirs, model_output, sample, args.num_steps))
        step_ours.append(time_steps(ours, model_output, sample, args.num_steps))
        noise.append(time_noise(sample, args.num_steps))
    theirs_ms, ours_ms, noise_ms = (1e3 * statistics.median(x) for x in (step_theirs, step_ours, noise))
    report(
        f"step  diffusers {theirs_ms:.3f} ms   ours {ours_ms:.3f} ms   ratio ours/diffusers {ours_ms / theirs_ms:.3f}"
    )
    report(
        f"      noise draw {noise_ms:.3f} ms ({noise_ms / theirs_ms:.2f}x of diffusers' step); the rest of"
        f" ours {ours_ms - noise_ms:.3f} ms vs diffusers' {theirs_ms - noise_ms:.3f} ms"
        f" ({(ours_ms - noise_ms) / (theirs_ms - noise_ms):.2f}x)"
    )

    unet = tiny_unet()
    timer = UNetTimer(unet)
    pipe_ours = DDPMPosteriorPipeline(unet=unet, scheduler=DDPMPosteriorScheduler())
    pipe_theirs = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    totals = {"ours": [], "diffusers": []}
    unet_times = {"ours": [], "diffusers": []}
    for _ in range(args.rounds):
        for name, pipe in [("diffusers", pipe_theirs), ("ours", pipe_ours)]:
            total, in_unet = time_pipeline(pipe, timer, args.batch_size, args.pipeline_steps)
            totals[name].append(total)
            unet_times[name].append(in_unet)
    for name in ["diffusers", "ours"]:
        total, in_unet = statistics.median(totals[name]), statistics.median(unet_times[name])
        step_ms = ours_ms if name == "ours" else theirs_ms
        loop_overhead = total - in_unet - args.pipeline_steps * step_ms / 1e3
        report(
            f"pipeline {name:9s} total {total:.3f} s  UNet {in_unet:.3f} s  outside the UNet"
            f" {100 * (total - in_unet) / total:.2f}%  pipeline's own overhead (outside UNet and step)"
            f" {100 * loop_overhead / total:.2f}%"
        )
    report(
        "pipeline ratio ours/diffusers",
        round(statistics.median(totals["ours"]) / statistics.median(totals["diffusers"]), 3),
    )
    with open(args.output, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
