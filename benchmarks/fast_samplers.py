"""Fast samplers on our own cosine-schedule model, side by side in one run: sample quality against our own sampler.

    python benchmarks/fast_samplers.py                      # the shipped digits model, 1,000 samples a row
    python benchmarks/fast_samplers.py --num_samples 200    # a smoke run

For the shipped model (spaces/ddpm-digits/model: cosine schedule, learned-range variances, `timestep_spacing`
"leading") it samples, with one seed, from:

* our DDPMPosteriorScheduler at 25, 50 and 1,000 steps as shipped, and at 25 and 50 steps with "linspace" (what
  hf_ddpm's training wrote before), beside DDIM from that "linspace" config (which the pipeline now refuses);
* every scheduler of `pipe.scheduler.compatibles` at 25 and 50 steps, swapped in with `X.from_config(config)`; one
  the pipeline refuses is run with the option its refusal names (the row says which);
* `--num_diagnostic` samples of each at 25 steps from the "linspace" config with the refusal bypassed (what they
  gave before), and Euler and DPM-Solver++ at 25 steps starting at t0 = 990 ... 998 (the evidence for the bound of
  `MIN_START_ALPHA_BAR`).

Each row: pixel mean and std in [0, 1] (real digits: 0.305 and 0.376), fd-digits with its bootstrap standard error,
and for the main rows the difference to our sampler at the same steps with the standard error of the difference
(sqrt(se1^2 + se2^2)), "yes" when within two of them. Raw rows go to --output.json, the table to --output.md.
One torch thread: the machine is shared.
"""

import argparse
import ast
import re
import sys
import time

import diffusers
import numpy as np
import torch
from _results import report_results

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm.evaluation.data import load_digits
from hf_ddpm.evaluation.metrics import fd_digits

SKIPPED = ("EDMEulerScheduler", "DPMSolverSDEScheduler")  # EDM-preconditioned models only; needs torchsde
REMEDY = re.compile(r"from_config\(pipe\.scheduler\.config, (\w+)=([^)]*)\)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="spaces/ddpm-digits/model", help="a saved cosine-schedule digits model")
    parser.add_argument("--num_samples", type=int, default=1000, help="samples per main row")
    parser.add_argument("--num_diagnostic", type=int, default=300, help="samples per diagnostic row")
    parser.add_argument("--batch_size", type=int, default=500, help="images per pipeline call")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every row's generator")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples of fd-digits' standard error")
    parser.add_argument("--output", default="benchmarks/results/fast_samplers", help="path without extension")
    return parser.parse_args(argv)


def sample(pipe, num_samples: int, args, **call) -> torch.Tensor:
    """[N x 1 x 8 x 8] in [0, 1], `batch_size` at a time from one generator."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for start in range(0, num_samples, args.batch_size):
        count = min(args.batch_size, num_samples - start)
        batches.append(pipe(batch_size=count, generator=generator, output_type="pt", **call).images)
    return torch.cat(batches)


def measure(pipe, label: str, num_samples: int, args, **call) -> dict:
    start = time.perf_counter()
    images = sample(pipe, num_samples, args, **call)
    seconds = time.perf_counter() - start
    fd = fd_digits(images, bootstrap=args.bootstrap, seed=args.seed)
    row = {
        "label": label,
        "scheduler": type(pipe.scheduler).__name__,
        "first_timestep": int(round(float(pipe.scheduler.timesteps[0]))),
        "num_samples": num_samples,
        "pixel_mean": float(images.mean()),
        "pixel_std": float(images.std()),
        "fd_digits": fd["value"],
        "fd_digits_se": fd["standard_error"],
        "seconds": seconds,
        **{k: v for k, v in call.items() if k != "timesteps"},
    }
    print(
        f"{label:58s} t0={row['first_timestep']:4d} mean={row['pixel_mean']:.3f} std={row['pixel_std']:.3f}"
        f" fd={fd['value']:7.2f} +- {fd['standard_error']:5.2f}  {seconds:6.1f}s",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    diffusers.utils.logging.set_verbosity_error()
    pipe = DDPMPosteriorPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    shipped = pipe.scheduler.config
    real = load_digits("all")[0] / 255.0
    n, rows, diagnostics = args.num_samples, [], []

    for steps in (25, 50, 1000):
        label = f"DDPMPosteriorScheduler ({shipped.timestep_spacing}, as shipped)"
        rows.append(measure(pipe, label, n, args, num_inference_steps=steps))
    earlier = {**shipped, "timestep_spacing": "linspace"}  # what hf_ddpm's training wrote before
    for steps in (25, 50):
        pipe.scheduler = DDPMPosteriorScheduler.from_config(earlier)
        rows.append(
            measure(pipe, "DDPMPosteriorScheduler (linspace, the earlier default)", n, args, num_inference_steps=steps)
        )
        unguarded = DDPMPosteriorPipeline(unet=pipe.unet, scheduler=diffusers.DDIMScheduler.from_config(earlier))
        unguarded.set_progress_bar_config(disable=True)
        unguarded._check_first_timestep = lambda: None
        rows.append(measure(unguarded, "DDIMScheduler (linspace: refused now)", n, args, num_inference_steps=steps))

    compatibles = [c for c in DDPMPosteriorScheduler.from_config(shipped).compatibles if c.__name__ not in SKIPPED]
    for scheduler_class in compatibles:
        for steps in (25, 50):
            pipe.scheduler = scheduler_class.from_config(shipped)
            label = f"{scheduler_class.__name__} (as swapped in)"
            try:
                pipe._prepare_timesteps(steps, None)
            except ValueError as refusal:
                option, value = REMEDY.search(str(refusal)).groups()
                pipe.scheduler = scheduler_class.from_config(shipped, **{option: ast.literal_eval(value)})
                label = f"{scheduler_class.__name__} ({option}={value}, refused without)"
            rows.append(measure(pipe, label, n, args, num_inference_steps=steps))
        if scheduler_class.__name__ not in ("DDPMScheduler",):  # what each gave from t = 999, before the refusal
            unguarded = DDPMPosteriorPipeline(unet=pipe.unet, scheduler=scheduler_class.from_config(earlier))
            unguarded.set_progress_bar_config(disable=True)
            unguarded._check_first_timestep = lambda: None
            label = f"{scheduler_class.__name__} (linspace, refusal bypassed)"
            diagnostics.append(measure(unguarded, label, args.num_diagnostic, args, num_inference_steps=25))

    for scheduler_class in (diffusers.EulerDiscreteScheduler, diffusers.DPMSolverMultistepScheduler):
        for first in (990, 995, 996, 997, 998):
            pipe.scheduler = scheduler_class.from_config(shipped)
            pipe._check_first_timestep = lambda: None
            chain = [int(t) for t in np.linspace(0, first, 25).round()[::-1]]
            row = measure(
                pipe,
                f"{scheduler_class.__name__} (25 steps from t0={first})",
                args.num_diagnostic,
                args,
                timesteps=chain,
            )
            row["alpha_bar_t0"] = float(pipe.scheduler.alphas_cumprod[first])
            diagnostics.append(row)
            del pipe._check_first_timestep

    ours = {row["num_inference_steps"]: row for row in rows[:2]}
    for row in rows:
        reference = ours.get(row["num_inference_steps"])
        if reference is not None and row is not reference:
            se = float(np.hypot(row["fd_digits_se"], reference["fd_digits_se"]))
            row["fd_minus_ours"] = row["fd_digits"] - reference["fd_digits"]
            row["fd_minus_ours_se"] = se
            row["within_2se_of_ours"] = abs(row["fd_minus_ours"]) <= 2 * se
        row["digits_like"] = abs(row["pixel_mean"] - real.mean()) < 0.05 and abs(row["pixel_std"] - real.std()) < 0.05
    # real training digits scored against all digits (the floor the sampler rows cannot go below)
    floor = fd_digits(
        load_digits("train")[0][: min(n, 1617)], reference="digits", bootstrap=args.bootstrap, seed=args.seed
    )

    command = "python benchmarks/fast_samplers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"# Fast samplers on the cosine-schedule digits model ({args.model})",
        "",
        f"`{command.strip()}`: {n} samples a row (diagnostics {args.num_diagnostic}), seed {args.seed}, one torch"
        f" thread. Real digits: pixel mean {real.mean():.3f}, std {real.std():.3f}; fd-digits of"
        f" {floor['num_samples']} real digits (training split, inside the reference: an optimistic floor)"
        f" {floor['value']:.2f} +- {floor['standard_error']:.2f}.",
        "",
        "| sampler | steps | t0 | pixel mean | pixel std | fd-digits | minus ours (SE) | within 2 SE | s |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for row in rows:
        difference = f"{row['fd_minus_ours']:+.2f} ({row['fd_minus_ours_se']:.2f})" if "fd_minus_ours" in row else ""
        within = {True: "yes", False: "no"}.get(row.get("within_2se_of_ours"), "")
        lines.append(
            f"| {row['label']} | {row['num_inference_steps']} | {row['first_timestep']} | {row['pixel_mean']:.3f} |"
            f" {row['pixel_std']:.3f} | {row['fd_digits']:.2f} +- {row['fd_digits_se']:.2f} | {difference} |"
            f" {within} | {row['seconds']:.0f} |"
        )
    lines += [
        "",
        "Diagnostics (25 steps): each scheduler from the linspace config, refusal bypassed, and samplers from t0.",
        "",
        "| sampler | t0 | alpha-bar(t0) | pixel mean | pixel std | fd-digits |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in diagnostics:
        alpha_bar = float(pipe.scheduler.alphas_cumprod[row["first_timestep"]])
        lines.append(
            f"| {row['label']} | {row['first_timestep']} | {alpha_bar:.1e} | {row['pixel_mean']:.3f} |"
            f" {row['pixel_std']:.3f} | {row['fd_digits']:.2f} +- {row['fd_digits_se']:.2f} |"
        )
    results = {
        "command": command.strip(),
        "args": vars(args),
        "rows": rows,
        "diagnostics": diagnostics,
        "real_floor": floor,
        "real_pixel_mean": float(real.mean()),
        "real_pixel_std": float(real.std()),
    }
    report_results(args.output, results, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
