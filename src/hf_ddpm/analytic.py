# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
Analytic-DPM (Bao et al. 2022, arXiv 2201.06503) for a saved model trained with fixed variances: the optimal reverse
variances, without retraining, from Gamma_t = E_{q(x_t)} ||eps_theta(x_t, t)||^2 / d (the scheduler's
`variance_type="analytic"` holds the formula), estimated here by Monte Carlo on a data split.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import TYPE_CHECKING

import numpy as np

from ._choices import int_range
from ._devices import resolve_device
from ._errors import UsageError
from .evaluation.data import add_dataset_arguments, describe_dataset, load_dataset_images, uses_digits
from .files import atomic_write_text, check_output_dir
from .sampling import add_run_arguments, load_pipeline

if TYPE_CHECKING:  # torch is imported where used: `hf-ddpm --help` needs none
    import torch

STATISTICS_FILE = "analytic_gamma.json"

EXAMPLE = """Example:
  hf-ddpm analytic outputs/digits-simple --output_dir outputs/digits-simple-analytic
  hf-ddpm analytic google/ddpm-cifar10-32 --train_data_dir cifar10/train --output_dir outputs/cifar10-analytic
  hf-ddpm sample outputs/digits-simple-analytic --num_inference_steps 50
"""


def predicted_noise(scheduler, model_output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor):
    """
    eps_theta(x_t, t) from the model output, whatever the model predicts (epsilon, x_0 or v); the variance channels
    of a learned-variance model are dropped.
    """
    import torch

    channels = x_t.shape[1]
    output = model_output[:, :channels].double()
    x_t = x_t.double()
    alpha_bar = torch.from_numpy(scheduler._alphas_cumprod64).to(x_t.device)[timesteps].reshape(-1, 1, 1, 1)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return output
    if prediction_type == "sample":  # x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps
        return (x_t - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x_t  # v = sqrt(abar) eps - sqrt(1 - abar) x_0


def estimate_gamma(
    pipeline,
    images: torch.Tensor | np.ndarray,
    samples_per_timestep: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Estimate Gamma_t = E_{x_0, eps} ||eps_theta(x_t, t)||^2 / d at every training timestep.

    At each t, `samples_per_timestep` images are drawn without replacement (a fresh random subset per t, with
    replacement only when M exceeds the images), each noised once by q(x_t | x_0); Gamma_t is the mean of
    ||eps_theta||^2 / d over them, with ||eps||^2 / d of the drawn noise (mean 1) as a control variate
    (`control_variate_mean`), and its standard error the spread of the controlled draws over sqrt(M). The cost is
    T x M UNet evaluations, `batch_size` at a time.

    Args:
        pipeline ([`DDPMPosteriorPipeline`]): the model (its scheduler a `DDPMPosteriorScheduler`).
        images (`torch.Tensor` or `np.ndarray`): the data, [N x C x H x W] in [-1, 1] or uint8 [N x H x W x C]; the
            training split, whose distribution q(x_t) the statistic is an expectation over.
        samples_per_timestep (`int`, defaults to 100): M.
        batch_size (`int`, defaults to 256): (image, timestep) pairs per UNet call.
        seed (`int`, defaults to 0): the seed of the image choice and the noise.
        show_progress (`bool`, defaults to `True`): show a progress bar.

    Returns:
        `tuple`: Gamma_t [T] and its standard error [T], float64.
    """
    import torch
    from tqdm.auto import tqdm

    if samples_per_timestep < 3:  # the control variate's fit takes two: a standard error needs a third
        raise ValueError(
            f"`samples_per_timestep` must be at least 3 for a standard error, got {samples_per_timestep}."
        )
    scheduler = pipeline.scheduler
    x_start = pipeline._to_model_space(images)
    num_images, num_train_timesteps = x_start.shape[0], scheduler.config.num_train_timesteps
    generator = torch.Generator("cpu").manual_seed(seed)
    if samples_per_timestep <= num_images:  # a random subset of the images at each t
        choice = torch.rand(num_train_timesteps, num_images, generator=generator).argsort(dim=1)
        choice = choice[:, :samples_per_timestep]
    else:
        choice = torch.randint(num_images, (num_train_timesteps, samples_per_timestep), generator=generator)
    pair_timesteps = torch.arange(num_train_timesteps).repeat_interleave(samples_per_timestep)

    device, dtype = pipeline._execution_device, pipeline.unet.dtype
    squared_norms, noise_norms = [], []  # ||eps_theta||^2 / d and ||eps||^2 / d of each (image, timestep) pair
    progress = tqdm(total=len(pair_timesteps), desc="Gamma_t = E||eps||^2/d", disable=not show_progress)
    with progress as bar, torch.no_grad():
        for t, index in zip(pair_timesteps.split(batch_size), choice.reshape(-1).split(batch_size), strict=True):
            x0 = x_start[index]
            noise = torch.randn(x0.shape, generator=generator)
            x_t = scheduler.add_noise(x0, noise, t)
            model_output = pipeline.unet(x_t.to(device, dtype), t.to(device)).sample
            eps = predicted_noise(scheduler, model_output.float().cpu(), x_t, t)
            squared_norms.append(eps.pow(2).mean(dim=(1, 2, 3)))
            noise_norms.append(noise.double().pow(2).mean(dim=(1, 2, 3)))
            bar.update(len(t))
    shape = (num_train_timesteps, samples_per_timestep)
    gamma, standard_error = control_variate_mean(
        torch.cat(squared_norms).view(shape), torch.cat(noise_norms).view(shape)
    )
    return gamma.numpy(), standard_error.numpy()


def control_variate_mean(values: torch.Tensor, controls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The mean of each row of `values` [T x M] and its standard error, with `controls` [T x M] of known mean 1 as a
    control variate: mean(Y) - b (mean(Z) - 1), b = Cov(Y, Z) / Var(Z) fitted per row. Here Y = ||eps_theta||^2 / d
    and Z = ||eps||^2 / d of the very noise drawn: at large t the predictor nearly returns eps and most of Y's spread
    is Z's, which the control removes (there 1 - Gamma_t, which sets the variance, is small and needs the precision).
    """
    centered_z = controls - controls.mean(dim=1, keepdim=True)
    centered_y = values - values.mean(dim=1, keepdim=True)
    slope = (centered_y * centered_z).sum(dim=1) / (centered_z.pow(2).sum(dim=1)).clamp(min=1e-300)
    # a mean square is >= 0; with few draws the fitted slope can push the estimate below
    mean = (values.mean(dim=1) - slope * (controls.mean(dim=1) - 1.0)).clamp(min=0.0)
    residual = values - slope[:, None] * controls
    return mean, residual.std(dim=1, correction=2) / math.sqrt(values.shape[1])  # the mean and the slope: 2 dof


def with_analytic_variances(pipeline, gamma: np.ndarray | list[float]):
    """The pipeline with a scheduler of `variance_type="analytic"` carrying `gamma` (the UNet is shared)."""
    from .scheduling_ddpm_posterior import DDPMPosteriorScheduler

    scheduler = DDPMPosteriorScheduler.from_config(
        pipeline.scheduler.config, variance_type="analytic", analytic_gamma=[float(g) for g in gamma]
    )
    return type(pipeline)(unet=pipeline.unet, scheduler=scheduler)


def variance_relative_error(scheduler, gamma: np.ndarray, standard_error: np.ndarray) -> float:
    """
    How far the training chain's sigma*_t^2 (t >= 1) move at worst, relative to themselves, when Gamma moves by one
    standard error either way: with the clipping recomputed, so that where the proven bounds bind (the cosine
    schedule's last step, alpha_bar ~ 0) the clipped value counts.
    """
    from .scheduling_ddpm_posterior import analytic_variance

    alphas_cumprod = scheduler._alphas_cumprod64
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])

    def variances(gamma):
        return analytic_variance(alphas_cumprod, alphas_cumprod_prev, gamma, scheduler._decoder_variance)[1:]

    central = variances(gamma)
    shifted = [variances(np.maximum(gamma + sign * standard_error, 0.0)) for sign in (-1, 1)]
    return max(float((np.abs(variance - central) / central).max()) for variance in shifted)


def save_analytic_pipeline(pipeline, gamma, standard_error, output_dir: str, description: dict) -> dict:
    """
    Save the pipeline with the analytic variances of `gamma` to `output_dir`, and beside it analytic_gamma.json:
    `description` (where the model and the data came from), the estimate and its errors. Returns that record.
    """
    analytic = with_analytic_variances(pipeline, gamma)
    analytic.save_pretrained(output_dir)
    worst = int(np.argmax(standard_error))
    record = {
        **description,
        "max_standard_error": float(standard_error[worst]),
        "max_standard_error_timestep": worst,
        "mean_standard_error": float(standard_error.mean()),
        "max_variance_relative_error": variance_relative_error(analytic.scheduler, gamma, standard_error),
        "gamma": gamma.tolist(),
        "standard_error": standard_error.tolist(),
    }
    atomic_write_text(os.path.join(output_dir, STATISTICS_FILE), json.dumps(record, indent=2) + "\n")
    return record


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analytic",
        help="add Analytic-DPM's optimal variances to a fixed-variance model (no retraining)",
        description="Estimate Gamma_t = E||eps_theta(x_t, t)||^2 / d of a saved DDPM pipeline (ours or any diffusers"
        " DDPM folder, the flat google/ddpm-* layout included) on a data split, with its Monte-Carlo standard error,"
        " and write a new pipeline whose scheduler samples and bounds with variance_type='analytic' (Bao et al."
        " 2022). The input is left untouched.",
        epilog=EXAMPLE,
    )
    add_run_arguments(parser, 256, "(image, timestep) pairs per UNet call", "of the image choice and the noise")
    parser.add_argument(
        "--output_dir", required=True, help="the new pipeline folder (neither the model nor a folder that holds it)"
    )
    add_dataset_arguments(
        parser.add_argument_group("data (the training distribution Gamma is an expectation over)"),
        split_default="train",
        split_help="the split (default: train; for digits 'train', 'test' or 'all')",
    )
    parser.add_argument(
        "--samples_per_timestep",
        type=int_range(3),
        default=100,
        help="Monte-Carlo draws M at each timestep: T x M UNet evaluations, standard error ~ 1/sqrt(M) (default: 100)",
    )
    parser.set_defaults(handler=run_analytic)


def run_analytic(args: argparse.Namespace) -> int:
    check_output_dir(args.output_dir, inputs=[args.model])  # the input is left untouched
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):  # an earlier model and its stale results
        raise UsageError(f"--output_dir {args.output_dir} is not empty: pick a new folder for the analytic model.")
    uses_digits(args)
    pipeline = load_pipeline(args, resolve_device(args.device))
    if pipeline.unet.config.get("num_class_embeds") is not None:
        raise UsageError(
            "this model is class-conditional; Analytic-DPM's Gamma_t is estimated for unconditional models."
        )
    images = load_dataset_images(args, pipeline.unet.config)
    gamma, standard_error = estimate_gamma(pipeline, images, args.samples_per_timestep, args.batch_size, args.seed)
    description = {"source": args.model, **describe_dataset(args), "num_images": len(images)}
    description.update(samples_per_timestep=args.samples_per_timestep, seed=args.seed)
    record = save_analytic_pipeline(pipeline, gamma, standard_error, args.output_dir, description)
    print(
        f"Gamma_t from {len(images)} images, {args.samples_per_timestep} draws per timestep: Monte-Carlo standard"
        f" error {record['mean_standard_error']:.4f} on average, at most {record['max_standard_error']:.4f}"
        f" (t={record['max_standard_error_timestep']}); the optimal variances sigma*_t^2 to within"
        f" {100 * record['max_variance_relative_error']:.2f}% (one standard error, at worst)"
    )
    print(f"wrote {args.output_dir} (variance_type='analytic') and {os.path.join(args.output_dir, STATISTICS_FILE)}")
    return 0
