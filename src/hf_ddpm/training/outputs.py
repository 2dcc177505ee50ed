# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What training leaves behind: sample PNGs, held-out bits/dim, the saved pipeline and the run's JSON files."""

import hashlib
import json
import os

import numpy as np
import PIL.Image
import torch
from diffusers import UNet2DModel

from ..files import atomic_save, atomic_write_text
from ..pipeline_ddpm_posterior import DDPMPosteriorPipeline
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler


class EvaluationModel:
    """
    A copy of the UNet for sampling and bits/dim, loaded with the EMA (or current) weights on demand: evaluation
    never touches the training weights, and it draws from its own generators, never from the global RNG.
    """

    def __init__(self, unet_config: dict, scheduler_config: dict, device: torch.device):
        with torch.random.fork_rng(devices=[]):  # its random init must not shift the training RNG (exact resume)
            self.unet = UNet2DModel.from_config(unet_config).to(device).eval()
        self.unet.requires_grad_(False)
        scheduler = DDPMPosteriorScheduler.from_config(scheduler_config)
        self.pipeline = DDPMPosteriorPipeline(unet=self.unet, scheduler=scheduler)
        self.pipeline.set_progress_bar_config(disable=True)

    def load_weights(self, ema, training_unet: torch.nn.Module) -> None:
        """The EMA weights when there is an EMA, else the current ones of `training_unet`."""
        if ema is None:
            self.unet.load_state_dict(training_unet.state_dict())
        else:
            ema.copy_to(self.unet.parameters())

    def sample(self, num_images: int, num_inference_steps: int, seed: int) -> np.ndarray:
        """[N x H x W x C] float images in [0, 1], always from the same noise (seed) to compare across steps."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return self.pipeline(
            batch_size=num_images, generator=generator, num_inference_steps=num_inference_steps, output_type="np"
        ).images

    def bits_per_dim(self, images: torch.Tensor, num_timesteps: int, batch_size: int = 512) -> dict:
        """The variational bound of `images` ([N x C x H x W] in [-1, 1]) in bits/dim, stratified over timesteps."""
        generator = torch.Generator(device="cpu").manual_seed(0)
        num_train_timesteps = self.pipeline.scheduler.config.num_train_timesteps
        strided = None if num_timesteps >= num_train_timesteps else num_timesteps
        result = self.pipeline.bits_per_dim(
            images, generator=generator, batch_size=batch_size, num_timesteps=strided, show_progress=False
        )
        return {
            "value": float(result.bpd.mean()),
            "standard_error": result.standard_error,
            "num_images": int(images.shape[0]),
            "num_timesteps": int(result.timesteps.shape[1]),
        }


def save_png(image: PIL.Image.Image, path: str) -> None:
    """Write a PNG atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_save(path, lambda temporary: image.save(temporary, format="PNG"))


def write_json(data: dict, path: str) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def tensors_sha256(tensors) -> str:
    """A hash of the bytes of `tensors`, in order (data-parallel ranks compare theirs)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
