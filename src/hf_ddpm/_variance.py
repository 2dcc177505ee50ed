# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The `--variance_type` override of `hf-ddpm sample` and `hf-ddpm eval`: one rule for both (a copy, every type)."""

from ._choices import LEARNED_VARIANCE_TYPES, VARIANCE_TYPES
from ._errors import UsageError


def with_variance_type(pipeline, variance_type: str | None):
    """
    A copy of the pipeline whose scheduler uses another reverse-process variance (the UNet is shared, not copied).

    Args:
        pipeline ([`DDPMPosteriorPipeline`]): the pipeline; it is left as it is.
        variance_type (`str`, *optional*): one of `DDPMPosteriorScheduler`'s variance types; the learned ones only for
            a UNet that outputs variances. `None` returns `pipeline` itself.

    Raises:
        `UsageError` (a `ValueError`): an unknown type, or a learned one for a UNet with fixed variances.
    """
    if variance_type is None:
        return pipeline
    if variance_type not in VARIANCE_TYPES:
        raise UsageError(
            f"--variance_type must be one of {', '.join(map(repr, VARIANCE_TYPES))}, got {variance_type!r}."
        )
    unet_config = pipeline.unet.config
    if variance_type in LEARNED_VARIANCE_TYPES and unet_config.out_channels != 2 * unet_config.in_channels:
        raise UsageError(
            f"--variance_type {variance_type!r} needs a UNet with learned variances (2 x {unet_config.in_channels}"
            f" output channels); this one does not output variances (it has {unet_config.out_channels}): use"
            " 'fixed_small' or 'fixed_large'."
        )
    if variance_type == "analytic" and pipeline.scheduler.config.get("analytic_gamma") is None:
        raise UsageError(
            "--variance_type 'analytic' needs the model's statistics: run `hf-ddpm analytic MODEL --output_dir NEW`."
        )
    from .scheduling_ddpm_posterior import DDPMPosteriorScheduler

    scheduler = DDPMPosteriorScheduler.from_config(pipeline.scheduler.config, variance_type=variance_type)
    return type(pipeline)(unet=pipeline.unet, scheduler=scheduler)
