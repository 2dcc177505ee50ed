# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Space's model: a saved `DDPMPosteriorPipeline`, loaded by diffusers alone from the model's own code."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, SchedulerMixin

PIPELINE_CLASS = "DDPMPosteriorPipeline"  # the class the model's own pipeline_ddpm_posterior.py defines
MODEL_ENV = "HF_DDPM_SPACE_MODEL"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
MIN_STEPS = 10  # the chain is respaced from T steps down to at most this few


class SpaceModelError(RuntimeError):
    """The Space's model cannot be found or loaded (raised at startup)."""


@dataclass(frozen=True)
class SpaceModel:
    """
    The served model: one UNet shared by all requests, and the scheduler config each request builds its own
    scheduler from (requests run concurrently; a shared scheduler's `set_timesteps` would race).
    """

    unet: torch.nn.Module
    scheduler_config: dict
    source: str
    pipeline_class: type[DiffusionPipeline]  # the model's own DDPMPosteriorPipeline, loaded as remote code
    scheduler_class: type[SchedulerMixin]  # its DDPMPosteriorScheduler

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config["num_train_timesteps"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's images."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return self.unet.config.in_channels, height, width

    @property
    def learns_variance(self) -> bool:
        return self.unet.config.out_channels == 2 * self.unet.config.in_channels

    @property
    def variance_types(self) -> tuple[str, ...]:
        """fixed_small (beta-tilde_t) and fixed_large (beta_t); the learned type for a 2x-channel UNet."""
        if not self.learns_variance:
            return ("fixed_small", "fixed_large")
        trained = self.scheduler_config["variance_type"]
        return ("fixed_small", "fixed_large", trained if trained in ("learned", "learned_range") else "learned_range")

    @property
    def default_variance_type(self) -> str:
        trained = self.scheduler_config["variance_type"]
        return trained if trained in self.variance_types else self.variance_types[-1]

    @property
    def min_steps(self) -> int:
        return min(MIN_STEPS, self.num_train_timesteps)

    def scheduler(self, **overrides) -> SchedulerMixin:
        """A fresh scheduler of the model's config, with `overrides` (e.g. `variance_type`)."""
        return self.scheduler_class.from_config(self.scheduler_config, **overrides)

    def pipeline(self, variance_type: str | None = None) -> DiffusionPipeline:
        """A pipeline of its own for one request: the shared UNet and a fresh scheduler."""
        variance_type = variance_type or self.default_variance_type
        pipeline = self.pipeline_class(unet=self.unet, scheduler=self.scheduler(variance_type=variance_type))
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


def model_source() -> str:
    """HF_DDPM_SPACE_MODEL (a folder or Hub repo id), or the `model` folder beside this file."""
    return os.environ.get(MODEL_ENV) or str(DEFAULT_MODEL_DIR)


def is_local_path(source: str) -> bool:
    """A folder (existing, or written as a path), as opposed to a Hub repo id ("name" or "namespace/name")."""
    return os.path.exists(source) or source.startswith((".", "/", "~")) or source.count("/") > 1


def load_space_model(source: str | os.PathLike | None = None) -> SpaceModel:
    """
    Load the served pipeline with diffusers alone (its own modules, `trust_remote_code=True`), or raise a
    `SpaceModelError` that says what to do.
    """
    source = os.fspath(source) if source is not None else model_source()
    if Path(source) == DEFAULT_MODEL_DIR and not DEFAULT_MODEL_DIR.is_dir():
        raise SpaceModelError(
            f"No model folder at {DEFAULT_MODEL_DIR}. Copy a saved pipeline there (the output_dir of"
            f" `hf-ddpm train`), or set {MODEL_ENV} to a saved pipeline folder or a Hub repo id."
        )
    failure = f"Could not load the model {source!r} (from {MODEL_ENV} or the default)"
    if is_local_path(source) and not os.path.isfile(os.path.join(source, "model_index.json")):
        # checked here: diffusers would take a missing folder for a repo id and report a network error
        raise SpaceModelError(f"{failure}: {source} is not a folder holding a saved pipeline (no model_index.json).")
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
    return SpaceModel(
        unet=pipeline.unet.eval().requires_grad_(False),
        scheduler_config=dict(pipeline.scheduler.config),
        source=source,
        pipeline_class=type(pipeline),
        scheduler_class=type(pipeline.scheduler),
    )
