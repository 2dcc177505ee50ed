"""The default digits run against a plain diffusers loop given the same wall-clock time, scored by fd-digits.

    python benchmarks/digits_vs_diffusers.py                         # runs `python train.py` (the default run)
    python benchmarks/digits_vs_diffusers.py --ours outputs/ddpm-digits --ours_seconds 600   # reuse a finished run

The plain loop is the one diffusers' docs teach (the "Train a diffusion model" tutorial): UNet2DModel, DDPMScheduler
(linear betas, 1000 steps, fixed_small), L_simple, AdamW at 1e-4 with 500 warmup steps and a cosine schedule, no EMA,
sampled with DDPMPipeline at 1000 steps. It trains on the same images (the DDPM training split), with the same UNet
architecture (out_channels 1), the same batch size and the same threads, for the wall-clock seconds our run took.
Both are scored with fd-digits (the shipped digits classifier's feature space) against the training split, on
`--num_samples` samples each. Results are printed and written to benchmarks/results/digits_vs_diffusers.{md,json,png}.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from hf_ddpm import DDPMPosteriorPipeline
from hf_ddpm.evaluation import fd_digits, generate_samples
from hf_ddpm.images import auto_scale, image_grid, side_by_side
from hf_ddpm.training.data import load_digits_dataset
from hf_ddpm.training.presets import MODEL_PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_ours(output_dir: str, extra: list[str]) -> float:
    """Run the default `python train.py` and return its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--output_dir", output_dir, *extra], check=True)
    return time.perf_counter() - start


def train_images() -> torch.Tensor:
    """The DDPM training split of the digits, [N x 1 x 8 x 8] in [-1, 1]."""
    train = load_digits_dataset()["train"]
    pixels = np.stack([np.asarray(image) for image in train["image"]]).astype(np.float32)
    return torch.from_numpy(pixels / 127.5 - 1.0)[:, None]


def train_plain_diffusers(seconds: float, batch_size: int, seed: int = 0) -> tuple[DDPMPipeline, int]:
    """The diffusers tutorial's loop, run until `seconds` of wall-clock time have passed."""
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, **MODEL_PRESETS["digits"]["unet"])
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=500, num_training_steps=100_000)
    images = train_images()
    generator = torch.Generator().manual_seed(seed)
    step, start = 0, time.perf_counter()
    progress = tqdm(total=int(seconds), desc="plain diffusers loop (s)")
    while time.perf_counter() - start < seconds:
        clean = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        step += 1
        progress.n = int(time.perf_counter() - start)
        progress.set_postfix(step=step, loss=f"{loss.item():.4f}", refresh=False)
        progress.refresh()
    progress.close()
    unet.eval()
    return DDPMPipeline(unet=unet, scheduler=scheduler), step


def score(name: str, pipe, num_samples: int, num_inference_steps: int, seed: int) -> dict:
    start = time.perf_counter()
    samples = generate_samples(pipe, num_samples, num_inference_steps=num_inference_steps, seed=seed)
    sampling_seconds = time.perf_counter() - start
    result = fd_digits(samples, reference="digits-train")
    return {
        "name": name,
        "num_inference_steps": num_inference_steps,
        "fd_digits": result.value,
        **{k: v for k, v in result.extras.items() if k != "class_histogram"},
        "sampling_seconds": sampling_seconds,
        "samples": samples,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", default=None, help="a finished run's output folder (skips training ours)")
    parser.add_argument("--ours_seconds", type=float, default=None, help="wall-clock seconds of that run")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "outputs", "bench-ddpm-digits"))
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument(
        "--our_steps",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="our sampling step counts (learned_range, respaced); the ratio uses the first (default: 100 1000)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()

    if args.ours is None:
        args.ours, args.ours_seconds = args.output_dir, run_ours(args.output_dir, [])
    if args.ours_seconds is None:
        parser.error("--ours_seconds is required with --ours")
    ours = DDPMPosteriorPipeline.from_pretrained(args.ours)
    batch_size = json.load(open(os.path.join(args.ours, "training_args.json")))["train_batch_size"]
    plain, plain_steps = train_plain_diffusers(args.ours_seconds, batch_size, args.seed)

    rows = [
        score(f"hf-ddpm default run, {steps} steps", ours, args.num_samples, steps, args.seed)
        for steps in args.our_steps
    ]
    rows.append(score("plain diffusers loop, DDPMPipeline 1000 steps", plain, args.num_samples, 1000, args.seed))
    ratio = rows[0]["fd_digits"] / rows[-1]["fd_digits"]
    os.makedirs(args.results_dir, exist_ok=True)
    lines = [
        f"Training budget: {args.ours_seconds:.0f} s wall clock each ({torch.get_num_threads()} threads);"
        f" the plain loop made {plain_steps} steps of batch {batch_size}. fd-digits against the training split,"
        f" {args.num_samples} samples each.",
        "",
        "| model | fd-digits | mean confidence | class coverage | sampling time (s) |",
        "|---|---|---|---|---|",
        *[
            f"| {r['name']} | {r['fd_digits']:.2f} | {r['mean_confidence']:.3f} | {r['class_coverage']} |"
            f" {r['sampling_seconds']:.1f} |"
            for r in rows
        ],
        "",
        f"fd-digits ratio, ours ({args.our_steps[0]} steps) / plain diffusers: {ratio:.3f}",
    ]
    print("\n".join(lines))
    with open(os.path.join(args.results_dir, "digits_vs_diffusers.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary = {k: v for k, v in vars(args).items()} | {
        "plain_steps": plain_steps,
        "ratio": ratio,
        "rows": [{k: v for k, v in r.items() if k != "samples"} for r in rows],
    }
    with open(os.path.join(args.results_dir, "digits_vs_diffusers.json"), "w") as f:
        json.dump(summary, f, indent=2)
    # left: ours, right: the plain diffusers loop; 64 samples each
    scale = auto_scale(8, 48)
    grids = [
        image_grid(r["samples"][:64].permute(0, 2, 3, 1).numpy(), columns=8, scale=scale) for r in (rows[0], rows[-1])
    ]
    side_by_side(*grids, gap=8).save(os.path.join(args.results_dir, "digits_vs_diffusers.png"))


if __name__ == "__main__":
    main()
