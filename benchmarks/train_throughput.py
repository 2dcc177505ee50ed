# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training throughput: our training step, with each speed switch, against a plain loop of diffusers' components.

Same data (the digits), same UNet and batch size, one process, in one run. In interleaved rounds (every loop runs
`--steps_per_round` steps in turn, round after round, so that a machine shared with other jobs slows all of them
alike) it times

    ours           hf_ddpm.training's step as `train` runs it: hybrid loss with learned variances, gradient
                   clipping, AdamW (fused), EMA, the non-finite check and the per-quartile loss sums (`train_step`
                   + `LossMeter.add`), fed by our dataloader;
    ours + SWITCH  the same with one speed switch (--channels_last, --torch_compile, --mixed_precision bf16);
    plain          the loop diffusers' training tutorial teaches: a DataLoader of image tensors,
                   `DDPMScheduler.add_noise`, `UNet2DModel`, `F.mse_loss` on the noise, gradient clipping,
                   `torch.optim.AdamW` with its defaults and a warmup+cosine `get_scheduler`;
    unet           the UNet forward and backward alone, on the same batch, to find the share of our step spent
                   outside it;

and reports medians over rounds: images/s of each, the ratio of each to plain, and the share of our step outside the
UNet forward/backward. The thread count and batch size are part of the output.

    python benchmarks/train_throughput.py --threads 1 --output benchmarks/results/train_throughput
"""

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from _results import report_results  # benchmarks/ is on sys.path: these run as scripts
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler

from hf_ddpm.training import parse_args
from hf_ddpm.training.data import load_data, to_model_space
from hf_ddpm.training.loop import build_accelerator, build_components, build_dataloader, train_step
from hf_ddpm.training.metrics import LossMeter

SWITCHES = {
    "ours": [],
    "ours + channels_last": ["--channels_last"],
    "ours + bf16": ["--mixed_precision", "bf16"],
    "ours + torch_compile": ["--torch_compile"],
}


def parse_benchmark_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_preset", default="digits", help="The UNet preset (digits: the default model).")
    parser.add_argument("--train_batch_size", type=int, default=None, help="Images per step (default: the preset's).")
    parser.add_argument("--rounds", type=int, default=9, help="Interleaved rounds (medians over them).")
    parser.add_argument("--steps_per_round", type=int, default=4, help="Steps of each loop per round.")
    parser.add_argument("--warmup_steps", type=int, default=3, help="Untimed steps of each loop first.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument(
        "--switches", nargs="*", default=list(SWITCHES), choices=list(SWITCHES), help="Which of our loops to time."
    )
    parser.add_argument("--output", default=None, help="Write OUTPUT.json and OUTPUT.md (raw results) too.")
    return parser.parse_args()


def cycle(dataloader):
    while True:
        yield from dataloader


def build_ours(bench: argparse.Namespace, flags: list[str]):
    """Our step with `flags`; each loop its own Accelerator (the singletons reset: bf16 is one loop's setting)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    flags = ["--model_preset", bench.model_preset, "--logger", "none", "--device", "cpu", *flags]
    flags += ["--train_batch_size", str(bench.train_batch_size)] if bench.train_batch_size else []
    args = parse_args(flags)
    accelerator = build_accelerator(args)
    dataset, _, _ = load_data(args)
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    c, dataloader = build_components(args, accelerator, dataloader)
    batches, meter, count = cycle(dataloader), LossMeter(args.ddpm_num_steps), [0]

    def step():
        timesteps, terms = train_step(c, next(batches), count[0])
        meter.add(terms, timesteps)  # the loop's per-step logging work
        count[0] += 1

    return args, c, dataset, step


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
    images = torch.utils.data.TensorDataset(to_model_space(torch.stack(dataset.decoded)))
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


def build_unet_alone(args, trained_unet: UNet2DModel):
    """
    The forward and backward of the same UNet (a copy with the same weights: this loop must not touch the trained
    one's gradients) on a batch like ours, nothing else.
    """
    unet = UNet2DModel.from_config(trained_unet.config)
    unet.load_state_dict(trained_unet.state_dict())
    x = torch.randn(args.train_batch_size, args.channels, args.resolution, args.resolution)
    t = torch.randint(0, args.ddpm_num_steps, (args.train_batch_size,))

    def step():
        output = unet(x, t).sample
        output.backward(torch.ones_like(output))
        unet.zero_grad(set_to_none=True)

    return step


def time_interleaved(loops: dict, bench: argparse.Namespace) -> dict[str, list[float]]:
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
    return seconds


def main() -> None:
    bench = parse_benchmark_args()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    loops = {}
    for name in ["ours"] + [s for s in bench.switches if s != "ours"]:
        args, c, dataset, loops[name] = build_ours(bench, SWITCHES[name])
        if name == "ours":
            unet = c.accelerator.unwrap_model(c.unet)
            plain_config, ours_args, ours_dataset = dict(unet.config), args, dataset
    loops["plain"] = build_plain(ours_args, plain_config, ours_dataset)
    loops["unet"] = build_unet_alone(ours_args, unet)
    shown = list(loops)  # the table's order
    # the UNet alone runs right after ours in each round: the share outside compares the two back to back
    seconds = time_interleaved({"ours": loops.pop("ours"), "unet": loops.pop("unet"), **loops}, bench)

    median = {name: statistics.median(seconds[name]) for name in shown}
    batch = ours_args.train_batch_size
    results = {
        "command": "python benchmarks/train_throughput.py "
        + " ".join(f"--{k} {v}" for k, v in vars(bench).items() if v is not None and k not in ("switches", "output")),
        "preset": bench.model_preset,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "batch_size": batch,
        "threads": torch.get_num_threads(),
        "rounds": bench.rounds,
        "steps_per_round": bench.steps_per_round,
        "statistic": "median over interleaved rounds (the machine may be shared with other jobs)",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "ms_per_step": {name: value * 1000 for name, value in median.items()},
        "images_per_second": {name: batch / value for name, value in median.items()},
        "ratio_to_plain": {name: median["plain"] / value for name, value in median.items() if name != "unet"},
        "ratio_to_ours": {name: median["ours"] / value for name, value in median.items() if name.startswith("ours")},
        "share_of_our_step_outside_the_unet": 1 - median["unet"] / median["ours"],
        # the same share round by round (each round times both loops back to back): its spread is the noise
        "share_outside_quartiles_over_rounds": quartiles(
            [1 - unet / ours for unet, ours in zip(seconds["unet"], seconds["ours"], strict=True)]
        ),
        "seconds_per_round": seconds,
    }
    report_results(bench.output, results, format_report(results))


def quartiles(values: list[float]) -> list[float]:
    """The quartiles of `values`; of one round, its value three times (statistics.quantiles needs two)."""
    return statistics.quantiles(values, n=4) if len(values) > 1 else values * 3


def format_report(r: dict) -> str:
    lines = [
        f"# Training throughput, {r['preset']} preset ({r['parameters'] / 1e6:.2f}M parameters)",
        "",
        f"`{r['command']}`",
        "",
        f"batch {r['batch_size']}, {r['threads']} torch thread(s), one process, CPU ({r['cpu_count']} cores seen),"
        f" torch {r['torch']}; {r['statistic']}: {r['rounds']} rounds x {r['steps_per_round']} steps of each loop.",
        "",
        "| loop | ms/step | images/s | vs plain diffusers | vs ours (default) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ms in r["ms_per_step"].items():
        plain = f"{r['ratio_to_plain'][name]:.3f}x" if name in r["ratio_to_plain"] else ""
        ours = f"{r['ratio_to_ours'][name]:.3f}x" if name in r["ratio_to_ours"] else ""
        lines.append(f"| {name} | {ms:.1f} | {r['images_per_second'][name]:.1f} | {plain} | {ours} |")
    lines += [
        "",
        f"Share of our default step outside the UNet forward/backward: {r['share_of_our_step_outside_the_unet']:.1%}"
        "; round by round, quartiles "
        + " / ".join(f"{q:.1%}" for q in r["share_outside_quartiles_over_rounds"])
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
