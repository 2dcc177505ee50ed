# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The training objectives: L_simple, the hybrid L_simple + lambda L_vlb, and L_vlb (Nichol & Dhariwal, section 3),
as per-example terms: the loop weights them (importance sampling of t) and logs them per quarter of the range of t."""

import torch

from .._choices import LOSS_TYPES
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler, mean_over_pixels


def prediction_target(
    scheduler: DDPMPosteriorScheduler, x_start: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The target of the UNet's mean channels: epsilon, x_0, or v = sqrt(alpha_bar) eps - sqrt(1-alpha_bar) x_0."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x_start
    return scheduler.get_velocity(x_start, noise, timesteps)


def training_losses(
    scheduler: DDPMPosteriorScheduler,
    model_output: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    loss_type: str = "hybrid",
    vlb_weight: float = 0.001,
) -> dict[str, torch.Tensor]:
    """
    The per-example loss terms of one batch.

    Args:
        scheduler (`DDPMPosteriorScheduler`): the forward process (its config sets prediction and variance types).
        model_output (`torch.Tensor`): the UNet output at (x_t, t), [N x C x H x W] or [N x 2C x H x W].
        x_start (`torch.Tensor`): the clean images x_0 in [-1, 1], [N x C x H x W].
        x_t (`torch.Tensor`): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, [N x C x H x W].
        noise (`torch.Tensor`): the noise of x_t, [N x C x H x W].
        timesteps (`torch.Tensor`): [N] training timesteps.
        loss_type (`"simple"`, `"hybrid"` or `"vlb"`): the objective.
        vlb_weight (`float`): lambda of the hybrid objective.

    Returns:
        `dict[str, torch.Tensor]`: [N] float32 terms: `loss` (what to minimize), and `mse` and/or `vb` (bits/dim).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"`loss_type` must be one of {', '.join(map(repr, LOSS_TYPES))}, got {loss_type!r}.")
    # the terms in float32 also under bf16/fp16 autocast: the KL of nearly equal Gaussians cancels badly otherwise
    model_output, x_start, x_t, noise = (t.float() for t in (model_output, x_start, x_t, noise))
    channels = x_start.shape[1]
    mean_output = model_output[:, :channels]
    terms = {}
    if loss_type in ("simple", "hybrid"):
        target = prediction_target(scheduler, x_start, noise, timesteps)
        terms["mse"] = mean_over_pixels((mean_output - target) ** 2)
    if loss_type == "hybrid":
        # Nichol & Dhariwal sec. 3.1: L_vlb trains only the variance; the mean gets its gradient from L_simple.
        frozen_mean_output = torch.cat([mean_output.detach(), model_output[:, channels:]], dim=1)
        terms["vb"] = scheduler.vb_terms_bpd(frozen_mean_output, x_start, x_t, timesteps)
        # L_vlb = sum_t L_t is estimated by T * L_t at a uniform t: lambda * T * L_t (improved-diffusion: T / 1000)
        terms["loss"] = terms["mse"] + vlb_weight * scheduler.config.num_train_timesteps * terms["vb"]
    elif loss_type == "vlb":
        terms["vb"] = scheduler.vb_terms_bpd(model_output, x_start, x_t, timesteps)
        terms["loss"] = terms["vb"]
    else:
        terms["loss"] = terms["mse"]
    return terms
