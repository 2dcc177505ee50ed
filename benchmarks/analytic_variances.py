# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
Analytic-DPM's optimal variances (Bao et al. 2022) on fixed-variance digits models, beside the hybrid model.

For each fixed-variance model (our L_simple model and a plain diffusers DDPM, both trained on the digits):

1. estimate Gamma_t = E||eps_theta(x_t, t)||^2 / d on the training split (`hf_ddpm.analytic.estimate_gamma`), with
   its Monte-Carlo standard error;
2. the held-out bits/dim (the 180 test digits) of the chain of K steps, K in --steps, with fixed_small, fixed_large and
   analytic variances: the bound of the respaced chain that sampling with K steps runs (prior at its last timestep,
   one KL term per step, the decoder at its first), in full; at K = T with --stratified_full_chain S it is instead
   the stratified estimate with S timesteps per image (unbiased, its standard error covering the draw). The three
   variances share every UNet evaluation (same x_t, same model output), so their differences are paired;
3. fd-digits of N samples at each K in --fd_steps for the same variances (every setting starts from the same x_T).

The hybrid learned_range model is measured beside them in the same way (its own variances). Raw results go to
benchmarks/results/analytic_variances.json (rewritten after every measurement) and .md.

    python benchmarks/analytic_variances.py --simple outputs/bench/ours-simple --hybrid outputs/bench/ours-hybrid \
        --diffusers outputs/bench/diffusers-recipe
    python benchmarks/analytic_variances.py --quick ...       # a smoke run: few draws, few images, few samples
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from _results import write_results  # benchmarks/ is on sys.path: these run as scripts

FIXED_VARIANCES = ("fixed_small", "fixed_large")
VARIANCES = (*FIXED_VARIANCES, "analytic")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simple", default="outputs/bench/ours-simple", help="our L_simple model")
    parser.add_argument("--diffusers", default="outputs/bench/diffusers-recipe", help="a diffusers DDPM")
    parser.add_argument("--hybrid", default="outputs/bench/ours-hybrid", help="the hybrid learned_range model")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 100, 50, 25], help="chains of the bound")
    parser.add_argument("--fd_steps", type=int, nargs="*", default=[50, 25], help="chains of fd-digits")
    parser.add_argument("--num_samples", type=int, default=1000, help="samples per fd-digits setting")
    parser.add_argument(
        "--fd_extra", nargs="*", default=[], choices=("analytic+clip",), help="extra fd-digits settings"
    )
    parser.add_argument("--fd_only", nargs="*", default=[], help="only these fd-digits settings")
    parser.add_argument("--samples_per_timestep", type=int, default=100, help="Monte-Carlo draws of Gamma per t")
    parser.add_argument(
        "--stratified_full_chain",
        type=int,
        default=None,
        help="estimate the T-step bound from this many stratified timesteps per image instead of all T",
    )
    parser.add_argument("--max_images", type=int, default=None, help="only the first N held-out digits")
    parser.add_argument("--batch_size", type=int, default=500, help="(image, timestep) pairs per UNet call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=("bpd", "fd"), help="parts not to run")
    parser.add_argument("--output", default="benchmarks/results/analytic_variances", help="path without extension")
    parser.add_argument(
        "--analytic_dir", default="outputs/bench-analytic", help="where the analytic pipelines are saved"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: M=4, 16 images, 64 samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples_per_timestep, args.max_images, args.num_samples = 4, 16, 64
    return args


# --------------------------------------------------------------------------------------------------------------------
# The bound of several variances of one model, sharing the UNet evaluations
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def shared_bound(pipeline, schedulers: dict, images: torch.Tensor, timesteps, weights, respaced, seed, batch_size):
    """
    Per-image bits/dim of `images` [N x C x H x W] under each scheduler of `schedulers` (same UNet), at the same
    x_t ~ q(x_t | x_0) and the same model outputs: the pipeline's `bits_per_dim` loop, with every model output scored
    by every scheduler. `timesteps` [N x K'] and `weights` [K'] as `bits_per_dim` builds them.
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    num_images = images.shape[0]
    images_per_call = min(batch_size, num_images)
    timesteps_per_call = max(1, batch_size // images_per_call)
    vb = {name: torch.zeros(num_images, timesteps.shape[1], dtype=torch.float64) for name in schedulers}
    for start in range(0, num_images, images_per_call):
        x0 = images[start : start + images_per_call]
        for first in range(0, timesteps.shape[1], timesteps_per_call):
            chunk = timesteps[start : start + x0.shape[0], first : first + timesteps_per_call]
            n, k = chunk.shape
            x_start = x0.repeat(k, 1, 1, 1)
            t = chunk.T.reshape(-1)
            noise = torch.randn(x_start.shape, generator=generator)
            reference = next(iter(schedulers.values()))
            x_t = reference.add_noise(x_start, noise, t)
            model_output = pipeline.unet(x_t, t).sample
            for name, scheduler in schedulers.items():
                terms = scheduler.vb_terms_bpd(model_output, x_start, x_t, t, clip_denoised=True, respaced=respaced)
                vb[name][start : start + n, first : first + k] = terms.reshape(k, n).T.double()
    weights = torch.as_tensor(weights, dtype=torch.float64)
    results = {}
    for name, scheduler in schedulers.items():
        per_image = scheduler.prior_bpd(images, respaced=respaced).double() + (vb[name] * weights).sum(dim=1)
        results[name] = {
            "bpd": float(per_image.mean()),
            "standard_error": float(per_image.std() / math.sqrt(num_images)),
            "decoder": float(vb[name][:, 0].mean()),
            "per_image": per_image.numpy(),
        }
    for name in schedulers:  # paired differences (the same x_t): their own, smaller, standard errors
        difference = results[name]["per_image"] - results[next(iter(schedulers))]["per_image"]
        results[name]["paired_se_vs_first"] = float(difference.std(ddof=1) / math.sqrt(num_images))
        results[name]["paired_difference"] = {
            other: [float(d.mean()), float(d.std(ddof=1) / math.sqrt(num_images))]
            for other in schedulers
            if other != name
            for d in [results[name]["per_image"] - results[other]["per_image"]]
        }
    for result in results.values():
        del result["per_image"]
    return results


def chain_bound(pipeline, schedulers: dict, images, steps: int, args) -> dict:
    """The bound of the chain of `steps` steps for each scheduler (see the module docstring)."""
    from hf_ddpm.pipeline_ddpm_posterior import _bound_timesteps

    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    num_images = images.shape[0]
    if steps >= num_train_timesteps:
        strata = args.stratified_full_chain
        generator = torch.Generator("cpu").manual_seed(args.seed + 1)
        timesteps, weights = _bound_timesteps(num_train_timesteps, strata, num_images, generator)
        respaced, how = False, ("full" if strata is None else f"stratified, {strata} timesteps per image")
    else:
        for scheduler in schedulers.values():
            scheduler.set_timesteps(steps)
        chain = next(iter(schedulers.values())).timesteps.flip(0)
        timesteps, weights, respaced, how = chain.expand(num_images, -1), [1.0] * steps, True, "full"
    start = time.perf_counter()
    results = shared_bound(pipeline, schedulers, images, timesteps, weights, respaced, args.seed, args.batch_size)
    seconds = time.perf_counter() - start
    for result in results.values():
        result.update(bound=how, seconds=round(seconds, 1), num_images=num_images)
    return results


@torch.no_grad()
def decoder_variance_choice(pipeline, x0: torch.Tensor, seed: int) -> dict:
    """
    The decoder term -log p(x_0 | x_1) of the held-out images, at t = 0, with the analytic variance floored at
    beta-tilde_1 (what the scheduler does, the paper's choice) and with the analytic value E Var(x_0 | x_1) alone.
    """
    from hf_ddpm import DDPMPosteriorScheduler

    floored = pipeline.scheduler
    unfloored = DDPMPosteriorScheduler.from_config(floored.config)
    unfloored._decoder_variance = 0.0  # benchmark only: the scheduler without its floor
    unfloored._train_chain = unfloored._chain_terms(np.arange(floored.config.num_train_timesteps))
    unfloored._tensors = {}
    t = torch.zeros(x0.shape[0], dtype=torch.long)
    x_t = floored.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)), t)
    output = pipeline.unet(x_t, t).sample
    result = {}
    for name, scheduler in (("floored", floored), ("unfloored", unfloored)):
        terms = scheduler.vb_terms_bpd(output, x0, x_t, t, clip_denoised=True)
        result[name] = {
            "variance": float(np.exp(scheduler._train_chain["log_analytic_variance"][0])),
            "decoder_bpd": float(terms.mean()),
            "standard_error": float(terms.std() / math.sqrt(len(terms))),
        }
    return result


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------


def sampling_pipeline(pipeline, variance: str, with_variance_type):
    """The pipeline sampling with `variance`; "analytic+clip" clips sigma of the step into the decoder (see below)."""
    if variance != "analytic+clip":
        return with_variance_type(pipeline, variance)
    from hf_ddpm import DDPMPosteriorScheduler

    class LastNoiseClipped(DDPMPosteriorScheduler):
        """Bao et al.'s sampling tweak: E|sigma z| <= 2 pixel levels (2 x 2/255) at the step that feeds the decoder."""

        def _chain_fixed_sigmas(self, terms):
            sigmas = super()._chain_fixed_sigmas(terms)
            if len(sigmas) > 1:
                sigmas[1] = min(sigmas[1], 2 * 2 / 255 * math.sqrt(math.pi / 2))
            return sigmas

    return type(pipeline)(unet=pipeline.unet, scheduler=LastNoiseClipped.from_config(pipeline.scheduler.config))


def variance_schedulers(pipeline, variances) -> dict:
    from hf_ddpm import DDPMPosteriorScheduler

    return {v: DDPMPosteriorScheduler.from_config(pipeline.scheduler.config, variance_type=v) for v in variances}


def analytic_pipeline(pipeline, path: str, train_images, args):
    """
    The model with analytic variances, saved as `hf-ddpm analytic` saves it in --analytic_dir/NAME, and the record of
    its Gamma estimate; an earlier run's folder with the same M and seed is reused (`--skip bpd`, then `--skip fd`).
    """
    from hf_ddpm import DDPMPosteriorPipeline
    from hf_ddpm.analytic import STATISTICS_FILE, estimate_gamma, save_analytic_pipeline

    folder = os.path.join(args.analytic_dir, os.path.basename(os.path.normpath(path)) + "-analytic")
    statistics = os.path.join(folder, STATISTICS_FILE)
    record = json.load(open(statistics)) if os.path.isfile(statistics) else {}
    if (record.get("samples_per_timestep"), record.get("seed")) != (args.samples_per_timestep, args.seed):
        start = time.perf_counter()
        gamma, standard_error = estimate_gamma(
            pipeline, train_images, args.samples_per_timestep, args.batch_size, args.seed
        )
        description = {"source": path, "dataset": "digits", "split": "train", "num_images": len(train_images)}
        description.update(samples_per_timestep=args.samples_per_timestep, seed=args.seed)
        record = save_analytic_pipeline(pipeline, gamma, standard_error, folder, description)
        record["seconds"] = round(time.perf_counter() - start, 1)
    gamma = record["gamma"]
    summary = {k: v for k, v in record.items() if k not in ("gamma", "standard_error")}
    summary["folder"] = folder
    summary["gamma_at"] = {str(t): gamma[t] for t in (0, 1, 10, 100, 500, 900, 990, 999) if t < len(gamma)}
    summary["standard_error_at"] = {t: record["standard_error"][int(t)] for t in summary["gamma_at"]}
    return DDPMPosteriorPipeline.from_pretrained(folder), summary


def run(args) -> dict:
    from hf_ddpm import DDPMPosteriorPipeline
    from hf_ddpm._digits import load_digits
    from hf_ddpm.evaluation.metrics import fd_digits
    from hf_ddpm.sampling import generate_samples, with_variance_type

    torch.set_num_threads(1)
    train_images = load_digits("train")[0]
    test_images = load_digits("test")[0][: args.max_images]
    report = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "args": {k: v for k, v in vars(args).items()},
        "models": {},
    }
    models = [("L_simple (ours)", args.simple, True), ("diffusers DDPM", args.diffusers, True)]
    models.append(("hybrid learned_range (ours)", args.hybrid, False))
    for label, path, fixed in models:
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            print(f"skipping {label}: no model at {path}", flush=True)
            continue
        pipeline = DDPMPosteriorPipeline.from_pretrained(path)
        pipeline.set_progress_bar_config(disable=True)
        entry = report["models"][label] = {
            "path": path,
            "config": {
                k: pipeline.scheduler.config[k]
                for k in ("variance_type", "beta_schedule", "timestep_spacing", "num_train_timesteps")
            },
            "bpd": {},
            "fd_digits": {},
        }
        if fixed:
            pipeline, entry["gamma"] = analytic_pipeline(pipeline, path, train_images, args)
            print(f"{label}: Gamma {entry['gamma']}", flush=True)
            pipeline.set_progress_bar_config(disable=True)
            variances = VARIANCES
        else:
            variances = (pipeline.scheduler.config.variance_type, *FIXED_VARIANCES)
        x0 = pipeline._to_model_space(test_images)
        if "bpd" not in args.skip:
            for steps in args.steps:
                results = chain_bound(pipeline, variance_schedulers(pipeline, variances), x0, steps, args)
                entry["bpd"][str(steps)] = results
                print(f"{label}, {steps} steps: " + ", ".join(f"{v} {r['bpd']:.3f}" for v, r in results.items()))
                write(report, args.output)
            if fixed:
                entry["decoder_variance"] = decoder_variance_choice(pipeline, x0, args.seed)
                print(f"{label}: decoder {entry['decoder_variance']}", flush=True)
                write(report, args.output)
        if "fd" not in args.skip:
            for steps in args.fd_steps:
                for variance in variances[:1] if not fixed else (*variances, *args.fd_extra):
                    if args.fd_only and variance not in args.fd_only:
                        continue
                    start = time.perf_counter()
                    samples = generate_samples(
                        sampling_pipeline(pipeline, variance, with_variance_type),
                        args.num_samples,
                        steps,
                        seed=args.seed,
                        show_progress=False,
                    ).images
                    result = fd_digits(samples)
                    result["seconds"] = round(time.perf_counter() - start, 1)
                    entry["fd_digits"].setdefault(str(steps), {})[variance] = result
                    print(f"{label}, {steps} steps, {variance}: fd-digits {result['value']:.2f}", flush=True)
                    write(report, args.output)
    write(report, args.output)
    return report


def write(report: dict, output: str) -> None:
    write_results(output, report, markdown(report))


def markdown(report: dict) -> str:
    lines = ["# Analytic-DPM variances on the digits", ""]
    for label, entry in report["models"].items():
        lines.append(f"## {label} ({entry['path']}, {entry['config']})")
        if "gamma" in entry:
            g = entry["gamma"]
            lines.append(
                f"Gamma from {g['num_images']} training digits, M = {g['samples_per_timestep']} per timestep"
                f" ({g.get('seconds', 'earlier run')} s): standard error mean {g['mean_standard_error']:.4f}, max"
                f" {g['max_standard_error']:.4f} (t = {g['max_standard_error_timestep']}); sigma*^2 within"
                f" {100 * g['max_variance_relative_error']:.2f}% (1 SE, worst t)"
            )
        lines += ["", "| bits/dim (held-out) | steps | variance | bpd | SE | paired SE vs first | decoder | bound |"]
        lines.append("|---|---:|---|---:|---:|---:|---:|---|")
        for steps, results in entry["bpd"].items():
            for variance, r in results.items():
                lines.append(
                    f"| | {steps} | {variance} | {r['bpd']:.3f} | {r['standard_error']:.3f} |"
                    f" {r['paired_se_vs_first']:.3f} | {r['decoder']:.3f} | {r['bound']} |"
                )
        if "decoder_variance" in entry:
            d = entry["decoder_variance"]
            lines.append(
                "decoder term at t = 0 (held-out): floored at beta-tilde_1, sigma^2 = {:.3g}: {:.4f} +- {:.4f} bpd;"
                " analytic alone, sigma^2 = {:.3g}: {:.4f} +- {:.4f}".format(
                    d["floored"]["variance"],
                    d["floored"]["decoder_bpd"],
                    d["floored"]["standard_error"],
                    d["unfloored"]["variance"],
                    d["unfloored"]["decoder_bpd"],
                    d["unfloored"]["standard_error"],
                )
            )
        lines += [
            "",
            "| fd-digits | steps | variance | fd | confidence | n | seconds |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for steps, results in entry["fd_digits"].items():
            for variance, r in results.items():
                confidence = r.get("mean_confidence", float("nan"))
                lines.append(
                    f"| | {steps} | {variance} | {r['value']:.2f} | {confidence:.3f} | {r['num_samples']} |"
                    f" {r['seconds']} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    arguments = parse_args()
    run(arguments)
    print(f"wrote {arguments.output}.json and {arguments.output}.md")
    sys.exit(0)
