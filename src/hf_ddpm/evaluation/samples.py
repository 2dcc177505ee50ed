# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Generating the samples that the Frechet metrics score, and saving a grid of them as a PNG."""

import os

import numpy as np
import torch

from ..images import image_grid
from .frechet import quantize


def generate_samples(
    pipeline,
    num_samples: int,
    num_inference_steps: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
) -> torch.Tensor:
    """
    Draw samples by ancestral sampling, `batch_size` at a time, quantized to 256 levels like saved images.

    Works with `DDPMPosteriorPipeline` and diffusers' `DDPMPipeline` (any pipeline taking `batch_size`, `generator`,
    `num_inference_steps` and `output_type="np"`).

    Args:
        pipeline: the pipeline.
        num_samples (`int`): N.
        num_inference_steps (`int`, *optional*): the chain length; the scheduler's training steps when `None`.
        batch_size (`int`, defaults to 256): images per pipeline call.
        seed (`int`, defaults to 0): seeds one CPU generator that every batch draws from in turn: the same seed and
            `batch_size` give the same samples on every device.
        show_progress (`bool`, defaults to `True`): one progress bar over the samples.

    Returns:
        `torch.Tensor`: [N x C x H x W] in [0, 1].
    """
    from tqdm.auto import tqdm

    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if num_inference_steps is None:
        num_inference_steps = pipeline.scheduler.config.num_train_timesteps
    generator = torch.Generator("cpu").manual_seed(seed)
    pipeline.set_progress_bar_config(disable=True)  # one bar over all samples instead of one per batch
    batches = []
    with tqdm(total=num_samples, desc=f"sampling ({num_inference_steps} steps)", disable=not show_progress) as bar:
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            images = pipeline(
                batch_size=count, generator=generator, num_inference_steps=num_inference_steps, output_type="np"
            ).images  # [n x H x W x C] in [0, 1]
            batches.append(torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2))
            bar.update(count)
    return quantize(torch.cat(batches))


def save_image_grid(images: torch.Tensor, path: str, max_images: int = 64, scale: int = 4) -> str:
    """
    Save up to `max_images` images, float [N x C x H x W] in [0, 1], as one PNG grid, each pixel `scale` x `scale`.
    """
    grid = image_grid(images[:max_images].permute(0, 2, 3, 1).numpy(), scale=scale, padding=scale)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return path
