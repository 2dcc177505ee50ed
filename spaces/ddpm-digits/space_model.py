# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Space's model: a saved `DDPMPosteriorPipeline`, loaded by diffusers from the model's own code."""

import functools
import os
from pathlib import Path

from diffusers import DiffusionPipeline, SchedulerMixin

MODEL_ENV = "HF_DDPM_SPACE_MODEL"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
MIN_STEPS = 10  # the chain is respaced from T steps down to at most this few
# The model's own code, which `save_pretrained` and `hf-ddpm push-space` write (git keeps it in src/hf_ddpm/ only)
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
        self.pipeline_class, self.scheduler_class = type(pipeline), type(pipeline.scheduler)
        self.scheduler_config = dict(pipeline.scheduler.config)
        self.num_train_timesteps = int(self.scheduler_config["num_train_timesteps"])
        self.min_steps = min(MIN_STEPS, self.num_train_timesteps)
        config = self.unet.config
        size = (config.sample_size,) * 2 if isinstance(config.sample_size, int) else tuple(config.sample_size)
        self.image_shape = (config.in_channels, *size)  # (C, H, W)
        self.num_classes = config.get("num_class_embeds")  # a class-conditional model (a converted ADM, say)
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


def load_space_model(source: str | os.PathLike | None = None) -> SpaceModel:
    """
    The served pipeline (HF_DDPM_SPACE_MODEL, else `model/` beside this file), loaded by diffusers from its own code,
    or with the installed hf_ddpm where its folder lacks that code (the Space in a checkout); else `SpaceModelError`.
    """
    source = os.fspath(source or os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)
    failure = f"Could not load the model {source!r} (from {MODEL_ENV} or the default)"
    # checked here: diffusers would take a missing folder for a Hub repo id
    is_folder = os.path.exists(source) or source.startswith((".", "/", "~")) or source.count("/") > 1
    if is_folder and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise SpaceModelError(
            f"{failure}: {source} is not a folder holding a saved pipeline (no model_index.json). Save one there"
            f" (the output_dir of `hf-ddpm train`), or set {MODEL_ENV} to a pipeline folder or a Hub repo id."
        )
    load = functools.partial(DiffusionPipeline.from_pretrained, trust_remote_code=True)
    missing = [name for name in MODEL_CODE if not os.path.isfile(os.path.join(source, name))]
    if is_folder and missing:
        try:
            from hf_ddpm import DDPMPosteriorPipeline  # optional: the pushed Space's model holds its code
        except ImportError:
            raise SpaceModelError(
                f"{failure}: it lacks the model's code ({', '.join(missing)}), which `save_pretrained` and"
                " `hf-ddpm push-space` write; or install hf-ddpm (`pip install -e .` in its checkout) to load it."
            ) from None
        load = DDPMPosteriorPipeline.from_pretrained
    try:
        pipeline = load(source)
    except Exception as error:  # any loading failure is a startup failure: say which model and why
        raise SpaceModelError(f"{failure}: {error}") from error
    name = type(pipeline).__name__
    if name != "DDPMPosteriorPipeline" or pipeline.unet.config.in_channels not in (1, 3):
        raise SpaceModelError(
            f"{failure}: it is a {name}; the Space serves a DDPMPosteriorPipeline of 1 or 3 channels."
        )
    return SpaceModel(pipeline, source)
