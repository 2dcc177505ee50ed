# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Space's model: a saved `DDPMPosteriorPipeline`, loaded by diffusers alone from the model's own code."""

import os
import shlex
from pathlib import Path

from diffusers import DiffusionPipeline, SchedulerMixin

PIPELINE_CLASS = "DDPMPosteriorPipeline"  # the class the model's own pipeline_ddpm_posterior.py defines
MODEL_ENV = "HF_DDPM_SPACE_MODEL"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
MIN_STEPS = 10  # the chain is respaced from T steps down to at most this few
# The model's own code, which diffusers loads with trust_remote_code: `hf-ddpm push-space` writes it into the Space
# from the installed hf_ddpm (git holds no copy of it here).
MODEL_CODE = ("pipeline_ddpm_posterior.py", "scheduler/scheduling_ddpm_posterior.py")


class SpaceModelError(RuntimeError):
    """The Space's model cannot be found or loaded (raised at startup)."""


class SpaceModel:
    """
    The served model: its UNet, shared by all requests, and its scheduler config, from which each request builds a
    scheduler of its own (requests run concurrently; a shared scheduler's `set_timesteps` would race).
    """

    def __init__(self, pipeline: DiffusionPipeline, source: str):
        self.source = source
        self.unet = pipeline.unet.eval().requires_grad_(False)
        self.scheduler_config = dict(pipeline.scheduler.config)
        self.pipeline_class = type(pipeline)  # the model's own DDPMPosteriorPipeline, loaded as remote code
        self.scheduler_class = type(pipeline.scheduler)  # its DDPMPosteriorScheduler
        self.num_train_timesteps = int(self.scheduler_config["num_train_timesteps"])
        self.min_steps = min(MIN_STEPS, self.num_train_timesteps)
        config = self.unet.config
        size = (config.sample_size,) * 2 if isinstance(config.sample_size, int) else tuple(config.sample_size)
        self.image_shape = (config.in_channels, *size)  # (C, H, W)
        # fixed_small (beta-tilde_t) and fixed_large (beta_t), and the learned variance of a 2x-channel UNet
        trained = self.scheduler_config["variance_type"]
        self.variance_types = ("fixed_small", "fixed_large")
        if config.out_channels == 2 * config.in_channels:
            self.variance_types += (trained if trained in ("learned", "learned_range") else "learned_range",)
        self.default_variance_type = trained if trained in self.variance_types else self.variance_types[-1]

    def scheduler(self, **overrides) -> SchedulerMixin:
        """A fresh scheduler of the model's config, with `overrides` (e.g. `variance_type`)."""
        return self.scheduler_class.from_config(self.scheduler_config, **overrides)

    def pipeline(self, variance_type: str | None = None) -> DiffusionPipeline:
        """A pipeline of its own for one request: the shared UNet and a fresh scheduler."""
        scheduler = self.scheduler(variance_type=variance_type or self.default_variance_type)
        pipeline = self.pipeline_class(unet=self.unet, scheduler=scheduler)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


def is_local_path(source: str) -> bool:
    """A folder (existing, or written as a path), as opposed to a Hub repo id ("name" or "namespace/name")."""
    return os.path.exists(source) or source.startswith((".", "/", "~")) or source.count("/") > 1


def load_space_model(source: str | os.PathLike | None = None) -> SpaceModel:
    """
    Load the served pipeline (by default HF_DDPM_SPACE_MODEL, else the `model` folder beside this file) with
    diffusers alone, from its own modules (`trust_remote_code=True`), or raise a `SpaceModelError` that says what to
    do.
    """
    source = os.fspath(source or os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)
    failure = f"Could not load the model {source!r} (from {MODEL_ENV} or the default)"
    # checked here: diffusers would take a missing folder for a repo id, and its errors for missing code name no file
    if is_local_path(source):
        if not os.path.isfile(os.path.join(source, "model_index.json")):
            raise SpaceModelError(
                f"{failure}: {source} is not a folder holding a saved pipeline (no model_index.json). Save one there"
                f" (the output_dir of `hf-ddpm train`), or set {MODEL_ENV} to a pipeline folder or a Hub repo id."
            )
        missing = [name for name in MODEL_CODE if not os.path.isfile(os.path.join(source, name))]
        if missing:
            folder, scheduler_folder = shlex.quote(source), shlex.quote(os.path.join(source, "scheduler"))
            raise SpaceModelError(
                f"{failure}: it lacks the model's code ({', '.join(missing)}), which `hf-ddpm push-space` and"
                f" `save_pretrained` write; from an hf-ddpm checkout: cp src/hf_ddpm/pipeline_ddpm_posterior.py"
                f" {folder} && cp src/hf_ddpm/scheduling_ddpm_posterior.py {scheduler_folder}"
            )
    try:
        pipeline = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
    except Exception as error:  # any loading failure is a startup failure: say which model and why
        raise SpaceModelError(f"{failure}: {error}") from error
    if type(pipeline).__name__ != PIPELINE_CLASS:
        raise SpaceModelError(
            f"{failure}: it is a {type(pipeline).__name__}; the Space serves a {PIPELINE_CLASS} saved by hf-ddpm."
        )
    if pipeline.unet.config.in_channels not in (1, 3):
        raise SpaceModelError(
            f"The model {source!r} has {pipeline.unet.config.in_channels} channels; the Space shows 1 or 3."
        )
    return SpaceModel(pipeline, source)
