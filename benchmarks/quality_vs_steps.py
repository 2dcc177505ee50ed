# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
Sample quality (fd-digits) against the number of sampling steps, for each reverse-process variance, beside diffusers.

Improved DDPM (Nichol & Dhariwal 2021, figure 8) shows that a model trained with learned variances (L_hybrid) keeps
its sample quality at 50-100 steps, where fixed variances degrade. This script measures that on the digits:

    hybrid model (learned_range)   x  {fixed_small, fixed_large, learned_range}  x  steps
    L_simple model (fixed_small)   x  {fixed_small, fixed_large}                 x  steps
    diffusers DDPMPipeline + DDPMScheduler on the L_simple model's weights       x  steps

Every setting draws N samples with the same seed (so the same x_T), scores them with fd-digits against the digits
(`hf_ddpm.evaluation.fd_digits`), and is timed. Writes to --output_dir (default benchmarks/results):
quality_vs_steps.png (the curves), quality_vs_steps.md (a markdown table, also printed) and quality_vs_steps.json.

    python benchmarks/quality_vs_steps.py                          # outputs/digits-hybrid, outputs/digits-simple
    python benchmarks/quality_vs_steps.py --quick                  # N=200 at 100 and 25 steps: a smoke run
    python benchmarks/quality_vs_steps.py --hybrid PATH --simple PATH --num_samples 2000 --steps 1000 100 50

The timings are wall-clock seconds of sampling only (not scoring), on --device, and are comparable only within one
run on an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass

import torch

DEFAULT_STEPS = (1000, 250, 100, 50, 25)
QUICK_STEPS = (100, 25)
QUICK_NUM_SAMPLES = 200
FIXED_VARIANCES = ("fixed_small", "fixed_large")


@dataclass
class Setting:
    """One curve: a model, a sampler implementation and a variance type."""

    model: str  # "hybrid" or "simple"
    sampler: str  # "hf_ddpm" or "diffusers"
    variance_type: str
    pipeline: object

    @property
    def label(self) -> str:
        sampler = "diffusers DDPMPipeline" if self.sampler == "diffusers" else "DDPMPosteriorPipeline"
        return f"{self.model} / {sampler} / {self.variance_type}"


@dataclass
class Measurement:
    model: str
    sampler: str
    variance_type: str
    num_inference_steps: int
    fd_digits: float
    mean_confidence: float
    class_coverage: int
    class_entropy_bits: float
    seconds: float
    samples_per_second: float


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hybrid", default="outputs/digits-hybrid", help="the model trained with L_hybrid")
    parser.add_argument("--simple", default="outputs/digits-simple", help="the model trained with L_simple")
    parser.add_argument("--num_samples", type=int, default=None, help="samples per setting (default 1000, quick 200)")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=None, help="step counts (default 1000 250 100 50 25; quick 100 25)"
    )
    parser.add_argument(
        "--diffusers_variance_types",
        nargs="+",
        choices=FIXED_VARIANCES,
        default=["fixed_small"],
        help="the variance types of the diffusers curves (default: fixed_small, DDPMScheduler's default)",
    )
    parser.add_argument(
        "--simple_variance_types",
        nargs="*",
        choices=FIXED_VARIANCES,
        default=list(FIXED_VARIANCES),
        help="the variance types of our sampler's curves on the L_simple model (none: give the flag alone)",
    )
    parser.add_argument("--reference", default="digits", choices=("digits", "digits-train", "digits-test"))
    parser.add_argument("--batch_size", type=int, default=500, help="samples per pipeline call")
    parser.add_argument("--seed", type=int, default=0, help="seed of every setting's samples")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--output_dir", default="benchmarks/results", help="where the PNG, markdown and JSON go")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=200 at 100 and 25 steps")
    args = parser.parse_args(argv)
    if args.num_samples is None:
        args.num_samples = QUICK_NUM_SAMPLES if args.quick else 1000
    if args.steps is None:
        args.steps = list(QUICK_STEPS if args.quick else DEFAULT_STEPS)
    if args.num_samples < 2 or args.batch_size < 1 or min(args.steps) < 1:
        parser.error("--num_samples must be >= 2, --batch_size and every --steps value >= 1")
    return args


def load_settings(args, device: torch.device) -> list[Setting]:
    """The curves to measure; fails before any sampling if a model folder is missing or has the wrong variance."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from hf_ddpm import DDPMPosteriorPipeline
    from hf_ddpm.evaluation import with_variance_type

    for name, folder in (("--hybrid", args.hybrid), ("--simple", args.simple)):
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise SystemExit(f"{name} {folder} is not a saved pipeline (no model_index.json); train it first.")
    hybrid = DDPMPosteriorPipeline.from_pretrained(args.hybrid).to(device)
    simple = DDPMPosteriorPipeline.from_pretrained(args.simple).to(device)
    if hybrid.unet.config.out_channels != 2 * hybrid.unet.config.in_channels:
        raise SystemExit(
            f"--hybrid {args.hybrid} has no learned variances (its UNet outputs as many channels as it takes)."
        )

    settings = [
        Setting("hybrid", "hf_ddpm", v, with_variance_type(hybrid, v)) for v in (*FIXED_VARIANCES, "learned_range")
    ]
    settings += [Setting("simple", "hf_ddpm", v, with_variance_type(simple, v)) for v in args.simple_variance_types]
    unet = UNet2DModel.from_pretrained(args.simple, subfolder="unet").to(device)
    for variance_type in args.diffusers_variance_types:
        scheduler = DDPMScheduler.from_pretrained(args.simple, subfolder="scheduler", variance_type=variance_type)
        settings.append(Setting("simple", "diffusers", variance_type, DDPMPipeline(unet=unet, scheduler=scheduler)))
    return settings


def measure(setting: Setting, steps: int, args, classifier) -> Measurement:
    from hf_ddpm.evaluation import fd_digits, generate_samples

    if device_of(setting.pipeline).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    samples = generate_samples(setting.pipeline, args.num_samples, steps, batch_size=args.batch_size, seed=args.seed)
    if device_of(setting.pipeline).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = fd_digits(samples, reference=args.reference, classifier=classifier)
    return Measurement(
        model=setting.model,
        sampler=setting.sampler,
        variance_type=setting.variance_type,
        num_inference_steps=steps,
        fd_digits=result.value,
        mean_confidence=result.extras["mean_confidence"],
        class_coverage=result.extras["class_coverage"],
        class_entropy_bits=result.extras["class_entropy_bits"],
        seconds=seconds,
        samples_per_second=args.num_samples / seconds,
    )


def real_digits_floor(args, classifier) -> tuple[int, float]:
    """
    fd-digits of `--num_samples` real training digits (drawn with `--seed`) against the reference: what a perfect
    sampler would score at this N, the metric's finite-sample floor. These digits are part of the "digits" and
    "digits-train" references, which makes the floor a little optimistic.
    """
    import numpy as np

    from hf_ddpm.evaluation import fd_digits
    from hf_ddpm.evaluation.metrics import digits_reference_images

    train = digits_reference_images("digits-train")
    count = min(args.num_samples, len(train))
    chosen = np.random.default_rng(args.seed).choice(len(train), count, replace=False)
    return count, fd_digits(train[chosen], reference=args.reference, classifier=classifier).value


def device_of(pipeline) -> torch.device:
    return next(pipeline.unet.parameters()).device


def markdown_table(measurements: list[Measurement]) -> str:
    lines = [
        "| model | sampler | variance | steps | fd-digits | confidence | coverage | seconds | samples/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.model} | {m.sampler} | {m.variance_type} | {m.num_inference_steps} | {m.fd_digits:.3f} |"
            f" {m.mean_confidence:.3f} | {m.class_coverage}/10 | {m.seconds:.1f} | {m.samples_per_second:.1f} |"
        )
    return "\n".join(lines)


def plot(measurements: list[Measurement], path: str, title: str, floor: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter, ScalarFormatter

    figure, (quality_axis, time_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
    curves = {}
    for m in measurements:
        curves.setdefault((m.model, m.sampler, m.variance_type), []).append(m)
    colors = {"fixed_small": "tab:blue", "fixed_large": "tab:orange", "learned_range": "tab:green"}
    for (model, sampler, variance_type), points in curves.items():
        points = sorted(points, key=lambda m: m.num_inference_steps)
        steps = [m.num_inference_steps for m in points]
        style = {
            "color": colors[variance_type],
            "linestyle": ":" if sampler == "diffusers" else ("-" if model == "hybrid" else "--"),
            "marker": "s" if sampler == "diffusers" else ("o" if model == "hybrid" else "^"),
            "label": f"{model} / {'diffusers' if sampler == 'diffusers' else 'hf_ddpm'} / {variance_type}",
        }
        quality_axis.plot(steps, [m.fd_digits for m in points], **style)
        time_axis.plot(steps, [m.seconds for m in points], **style)
    for axis, ylabel in ((quality_axis, "fd-digits (lower is better)"), (time_axis, "sampling time (s)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(sorted({m.num_inference_steps for m in measurements}))
        axis.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers, not 10^x, on the log axes
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("sampling steps")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    if floor is not None:
        quality_axis.axhline(floor, color="gray", linestyle="-.", label="real training digits (the floor)")
    quality_axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    from hf_ddpm.evaluation import DigitsClassifier
    from hf_ddpm.evaluation.cli import resolve_device

    args = parse_args(argv)
    device = resolve_device(args.device)
    settings = load_settings(args, device)
    classifier = DigitsClassifier.from_asset()
    measurements = []
    jobs = [(setting, steps) for setting in settings for steps in args.steps]
    for setting, steps in tqdm(jobs, desc="settings"):
        num_train_timesteps = setting.pipeline.scheduler.config.num_train_timesteps
        if steps > num_train_timesteps:
            tqdm.write(
                f"skipping {setting.label} at {steps} steps: the model has {num_train_timesteps} training steps"
            )
            continue
        measurements.append(measure(setting, steps, args, classifier))

    table = markdown_table(measurements)
    floor_count, floor = real_digits_floor(args, classifier)
    table += f"\n\nReal digits: {floor_count} training digits score {floor:.3f} against the reference (the floor)."
    title = f"fd-digits vs sampling steps ({args.num_samples} samples, seed {args.seed}, reference {args.reference})"
    os.makedirs(args.output_dir, exist_ok=True)
    png = os.path.join(args.output_dir, "quality_vs_steps.png")
    plot(measurements, png, title, floor=floor)
    with open(os.path.join(args.output_dir, "quality_vs_steps.md"), "w") as f:
        f.write(f"# {title}\n\nModels: hybrid = `{args.hybrid}`, simple = `{args.simple}`; device {device}.\n\n")
        f.write(table + "\n")
    metadata = {
        "hybrid": args.hybrid,
        "simple": args.simple,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "reference": args.reference,
        "batch_size": args.batch_size,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        "real_digits_floor": {"num_images": floor_count, "fd_digits": floor},
    }
    with open(os.path.join(args.output_dir, "quality_vs_steps.json"), "w") as f:
        json.dump({**metadata, "results": [asdict(m) for m in measurements]}, f, indent=2)
        f.write("\n")
    print(table)
    print(f"wrote {png} and quality_vs_steps.md/.json in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
