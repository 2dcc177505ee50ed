# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training throughput: our training step against a plain loop of diffusers' own components.

Same data (the digits), same UNet and batch size, one process. In interleaved rounds it times

    ours   hf_ddpm.training's step: hybrid loss with learned variances, gradient clipping, fused AdamW, EMA, the
           NaN check and the per-quartile loss bookkeeping (`train_step` + `quartile_means`), fed by our dataloader;
    plain  the loop diffusers' training tutorial teaches: a DataLoader of image tensors, `DDPMScheduler.add_noise`,
           `UNet2DModel`, `F.mse_loss` on the noise, gradient clipping, `torch.optim.AdamW` with its defaults and a
           warmup+cosine `get_scheduler`;
    unet   the UNet forward and backward alone, on the same batch, to find the share of our step spent outside it.

and prints medians over rounds: images/s of each, their ratio (target >= 1.0), and the share of our step time
outside the UNet forward/backward (target < 5%).

    python benchmarks/train_throughput.py                      # the digits preset and its batch size (64)
    python benchmarks/train_throughput.py --rounds 9 --steps_per_round 5 --threads 1
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler

from hf_ddpm.training import parse_args
from hf_ddpm.training.data import to_model_space
from hf_ddpm.training.loop import build_accelerator, build_components, build_dataloader, load_data, train_step
from hf_ddpm.training.losses import quartile_means


def parse_benchmark_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_preset", default="digits", help="The UNet preset (digits: the default model).")
    parser.add_argument("--train_batch_size", type=int, default=None, help="Images per step (default: the preset's).")
    parser.add_argument("--rounds", type=int, default=7, help="Interleaved rounds (medians over them).")
    parser.add_argument("--steps_per_round", type=int, default=4, help="Steps of each loop per round.")
    parser.add_argument("--warmup_steps", type=int, default=3, help="Untimed steps of each loop first.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    return parser.parse_args()


def cycle(dataloader):
    while True:
        yield from dataloader


def build_ours(bench: argparse.Namespace):
    flags = ["--model_preset", bench.model_preset, "--logger", "none", "--device", "cpu"]
    flags += ["--train_batch_size", str(bench.train_batch_size)] if bench.train_batch_size else []
    args = parse_args(flags)
    accelerator = build_accelerator(args)
    dataset, _, _ = load_data(args, show_progress=False)
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    components, dataloader = build_components(args, accelerator, dataloader)
    return args, components, dataset, cycle(dataloader)


def build_plain(args, unet_config: dict, dataset):
    """The diffusers tutorial's components on the same images, as float tensors in [-1, 1]."""
    config = {**unet_config, "out_channels": unet_config["in_channels"]}  # L_simple: no variance channels
    torch.manual_seed(0)
    model = UNet2DModel.from_config(config)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule="squaredcos_cap_v2")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    lr_scheduler = get_scheduler(
        "cosine", optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps
    )
    images = torch.utils.data.TensorDataset(to_model_space(dataset.images))
    dataloader = torch.utils.data.DataLoader(images, batch_size=args.train_batch_size, shuffle=True, drop_last=True)
    batches = cycle(dataloader)

    def step():
        (clean_images,) = next(batches)
        noise = torch.randn(clean_images.shape)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],)).long()
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        noise_pred = model(noisy_images, timesteps, return_dict=False)[0]
        loss = F.mse_loss(noise_pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    bench = parse_benchmark_args()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    args, c, dataset, our_batches = build_ours(bench)
    unet = c.accelerator.unwrap_model(c.unet)
    plain_step = build_plain(args, dict(unet.config), dataset)
    step_count = [0]

    def our_step():
        timesteps, terms = train_step(c, next(our_batches), step_count[0])
        quartile_means(terms, timesteps, args.ddpm_num_steps)  # the loop's per-step logging work
        step_count[0] += 1

    # the UNet alone: forward and backward of the same model on a batch like ours
    x = torch.randn(args.train_batch_size, args.channels, args.resolution, args.resolution)
    t = torch.randint(0, args.ddpm_num_steps, (args.train_batch_size,))

    def unet_step():
        output = unet(x, t).sample
        output.backward(torch.ones_like(output))
        unet.zero_grad(set_to_none=True)

    loops = {"ours": our_step, "plain": plain_step, "unet": unet_step}
    for _ in range(bench.warmup_steps):
        for step in loops.values():
            step()
    seconds = {name: [] for name in loops}
    for _ in range(bench.rounds):
        for name, step in loops.items():
            start = time.perf_counter()
            for _ in range(bench.steps_per_round):
                step()
            seconds[name].append((time.perf_counter() - start) / bench.steps_per_round)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    images_per_second = {name: args.train_batch_size / value for name, value in median.items()}
    parameters = sum(p.numel() for p in unet.parameters())
    print(
        f"preset {bench.model_preset} ({parameters / 1e6:.2f}M parameters), batch {args.train_batch_size},"
        f" {torch.get_num_threads()} thread(s), {bench.rounds} rounds x {bench.steps_per_round} steps"
    )
    for name in ("ours", "plain", "unet"):
        print(f"  {name:6s} {median[name] * 1000:8.1f} ms/step  {images_per_second[name]:8.1f} images/s")
    ratio = images_per_second["ours"] / images_per_second["plain"]
    print(f"ratio ours/plain (images/s): {ratio:.3f}  (target >= 1.0)")
    outside = 1 - median["unet"] / median["ours"]
    print(f"share of our step outside the UNet forward/backward: {outside:.1%}  (target < 5%)")


if __name__ == "__main__":
    main()
