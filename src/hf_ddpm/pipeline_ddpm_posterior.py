# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The DDPM sampling pipeline: ancestral sampling, the denoising trajectory, and bits/dim of given images.

Like the scheduler module, this file imports only torch, numpy and diffusers at import time: it is copied into every
saved pipeline folder so that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` works where hf_ddpm
is not installed.
"""

import importlib
import inspect
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

MODULE_FILE = "pipeline_ddpm_posterior.py"
PIPELINE_CLASS = "DDPMPosteriorPipeline"
SCHEDULER_MODULE = "scheduling_ddpm_posterior"
SCHEDULER_CLASS = "DDPMPosteriorScheduler"
OUTPUT_TYPES = ("pil", "np", "pt")
# What loading needs from a repo: configs and safetensors weights. Never code, never pickles.
LOAD_PATTERNS = [
    "model_index.json",
    "unet/config.json",
    "unet/*.safetensors",
    "unet/*.safetensors.index.json",
    "scheduler/scheduler_config.json",
    "config.json",
    "scheduler_config.json",
    "*.safetensors",
]


@dataclass
class DDPMPosteriorPipelineOutput(BaseOutput):
    """
    Output of [`DDPMPosteriorPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The samples, in [0, 1]: PIL images, an [N x H x W x C] array or an [N x C x H x W] tensor.
        trajectory (`torch.Tensor`, *optional*):
            With `return_trajectory=True`: x_t at the recorded steps, [F x N x C x H x W] in [-1, 1], on the CPU.
        pred_original_trajectory (`torch.Tensor`, *optional*):
            With `return_trajectory=True`: the predicted x_0 at the same steps, [F x N x C x H x W] in [-1, 1].
        trajectory_timesteps (`list[int]`, *optional*):
            The timestep t of each recorded frame (x_t is the input of that step).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    trajectory: torch.Tensor | None = None
    pred_original_trajectory: torch.Tensor | None = None
    trajectory_timesteps: list[int] | None = None


@dataclass
class BitsPerDimOutput(BaseOutput):
    """
    The variational bound of images under the model, in bits per dimension (Ho et al. eq. 5).

    Args:
        bpd (`torch.Tensor`): [N] the total bound: prior + sum of the KL terms + decoder NLL.
        prior_bpd (`torch.Tensor`): [N] KL(q(x_T | x_0) || N(0, I)).
        vb_bpd (`torch.Tensor`): [N x T'] the term of each evaluated timestep, ascending; column 0 is the decoder.
        timesteps (`torch.Tensor`): [N x T'] each image's evaluated timesteps (every row 0 ... T - 1 for the full
            bound; with `num_timesteps`, one drawn per stratum).
        weights (`torch.Tensor`): [T'] the weight of each term in the sum (1 for the full bound).
        standard_error (`float`): the standard error of the mean bpd over the N images.
    """

    bpd: torch.Tensor
    prior_bpd: torch.Tensor
    vb_bpd: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor
    standard_error: float


class DDPMPosteriorPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation with DDPM and Improved DDPM models.

    This model inherits from [`DiffusionPipeline`]; saving, loading, device placement and progress bars are its.

    Parameters:
        unet ([`UNet2DModel`]):
            The denoiser. For `variance_type` `learned` or `learned_range` it outputs twice the image channels.
        scheduler ([`SchedulerMixin`]):
            Normally a `DDPMPosteriorScheduler`; any diffusers scheduler with `set_timesteps` and `step` works for
            sampling (e.g. `DDIMScheduler.from_config(pipe.scheduler.config)`); `bits_per_dim` needs ours.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    # ------------------------------------------------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------------------------------------------------

    def _image_shape(self, batch_size: int) -> tuple[int, ...]:
        sample_size = self.unet.config.sample_size
        size = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return (batch_size, self.unet.config.in_channels, *size)

    def _initial_noise(self, shape, generator) -> torch.Tensor:
        device = self._execution_device
        if device.type == "mps":  # randn is not reproducible on mps: draw on the CPU, as DDPMPipeline does
            return randn_tensor(shape, generator=generator, dtype=self.unet.dtype).to(device)
        return randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)

    def check_inputs(self, batch_size, generator, output_type, callback_on_step_end_tensor_inputs) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"`generator` is a list of {len(generator)} generators for `batch_size`={batch_size}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(
                f"`output_type` must be one of {', '.join(map(repr, OUTPUT_TYPES))}, got {output_type!r}."
            )
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may only hold {self._callback_tensor_inputs}.")

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        timesteps: list[int] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["image"],
        return_trajectory: bool = False,
        trajectory_frames: int | None = None,
    ) -> DDPMPosteriorPipelineOutput | tuple:
        r"""
        Draw samples by ancestral sampling from x_T ~ N(0, I).

        Args:
            batch_size (`int`, defaults to 1):
                The number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes generation deterministic; the same generator gives the same images as `DDPMPipeline`.
            num_inference_steps (`int`, defaults to 1000):
                The number of denoising steps; fewer than the training steps respaces the chain.
            timesteps (`list[int]`, *optional*):
                Custom descending timesteps, instead of `num_inference_steps`.
            output_type (`"pil"`, `"np"` or `"pt"`, defaults to `"pil"`):
                The format of the images.
            return_dict (`bool`, defaults to `True`):
                Return a [`DDPMPosteriorPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called after each step as `callback_on_step_end(pipe, i, t, callback_kwargs)`; may return a dict
                that replaces tensors named in `callback_on_step_end_tensor_inputs`.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["image"]`):
                The tensors passed to the callback.
            return_trajectory (`bool`, defaults to `False`):
                Also return x_t and the predicted x_0 along the chain, to show the denoising process.
            trajectory_frames (`int`, *optional*):
                Record only this many evenly spaced steps (the first and last included); all steps when `None`.

        Examples:
            ```py
            >>> from hf_ddpm import DDPMPosteriorPipeline

            >>> pipe = DDPMPosteriorPipeline.from_pretrained("google/ddpm-cifar10-32")
            >>> image = pipe(num_inference_steps=100).images[0]
            >>> image.save("ddpm_generated_image.png")
            ```

        Returns:
            [`DDPMPosteriorPipelineOutput`] or `tuple`: the images (and the trajectory when asked for).
        """
        self.check_inputs(batch_size, generator, output_type, callback_on_step_end_tensor_inputs)
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=self._execution_device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        chain = self.scheduler.timesteps
        recorded = _frame_indices(len(chain), trajectory_frames) if return_trajectory else set()
        trajectory, pred_original_trajectory = [], []

        image = self._initial_noise(self._image_shape(batch_size), generator)
        for i, t in enumerate(self.progress_bar(chain)):
            model_output = self.unet(image, t).sample
            step = self.scheduler.step(model_output, t, image, generator=generator)
            if i in recorded:
                trajectory.append(image.float().cpu())
                pred_original_trajectory.append(step.pred_original_sample.float().cpu())
            image = step.prev_sample
            if callback_on_step_end is not None:
                tensors = {"image": image}
                callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                image = callback_outputs.get("image", image)

        images = self._postprocess(image, output_type)
        self.maybe_free_model_hooks()
        trajectory_outputs = (
            (torch.stack(trajectory), torch.stack(pred_original_trajectory), [int(chain[i]) for i in sorted(recorded)])
            if return_trajectory
            else (None, None, None)
        )
        if not return_dict:
            return (images, *trajectory_outputs) if return_trajectory else (images,)
        return DDPMPosteriorPipelineOutput(images, *trajectory_outputs)

    def _postprocess(self, image: torch.Tensor, output_type: str):
        """[-1, 1] model space to [0, 1] images, exactly as DDPMPipeline does."""
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return image
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(image) if output_type == "pil" else image

    # ------------------------------------------------------------------------------------------------------------
    # Likelihood
    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def bits_per_dim(
        self,
        images: torch.Tensor | np.ndarray | list[PIL.Image.Image],
        generator: torch.Generator | None = None,
        batch_size: int = 256,
        num_timesteps: int | None = None,
        clip_denoised: bool = True,
        show_progress: bool = True,
        num_inference_steps: int | None = None,
    ) -> BitsPerDimOutput:
        """
        The variational bound -log p(x_0) <= L_T + sum_t L_{t-1} + L_0 of each image, in bits per dimension.

        Each term L_{t-1} is a KL divergence at one x_t ~ q(x_t | x_0); all (image, timestep) pairs are batched
        together through the UNet, `batch_size` at a time.

        Args:
            images (`torch.Tensor`, `np.ndarray` or `list[PIL.Image.Image]`):
                A [N x C x H x W] tensor in [-1, 1], a uint8 [N x H x W x C] array, or PIL images.
            generator (`torch.Generator`, *optional*):
                The generator of the noise of q(x_t | x_0); fix it for a reproducible estimate.
            batch_size (`int`, defaults to 256):
                (image, timestep) pairs per UNet call.
            num_timesteps (`int`, *optional*):
                Evaluate the decoder term and `num_timesteps - 1` KL terms, one drawn per image and stratum of the
                timesteps (strata growing geometrically with t) and weighted by the stratum's size: a faster,
                unbiased estimate of the bound whose standard error covers the draw. All T when `None`.
            clip_denoised (`bool`, defaults to `True`):
                Clip the x_0 prediction to [-1, 1], as the Improved DDPM evaluation does.
            show_progress (`bool`, defaults to `True`):
                Show a progress bar.
            num_inference_steps (`int`, *optional*):
                The bound of the respaced chain that sampling with this many steps runs (the scheduler's spacing and
                variances): the prior at the chain's last timestep, one KL term per step, the decoder at its first.
                Exclusive with `num_timesteps`; the training chain when `None`.

        Returns:
            [`BitsPerDimOutput`]
        """
        scheduler = self.scheduler
        if not hasattr(scheduler, "vb_terms_bpd"):
            raise TypeError(
                f"bits_per_dim needs a DDPMPosteriorScheduler, but the scheduler is {type(scheduler).__name__}."
            )
        x_start = self._to_model_space(images)
        num_images = x_start.shape[0]
        respaced = num_inference_steps is not None
        if respaced:
            if num_timesteps is not None:
                raise ValueError("Pass at most one of `num_timesteps` and `num_inference_steps`.")
            scheduler.set_timesteps(num_inference_steps)
            timesteps = scheduler.timesteps.cpu().flip(0).expand(num_images, -1)  # the chain, ascending
            weights = [1.0] * timesteps.shape[1]
        else:
            timesteps, weights = _bound_timesteps(
                scheduler.config.num_train_timesteps, num_timesteps, num_images, generator
            )
        device, dtype = self._execution_device, self.unet.dtype
        x_start = x_start.to(device, dtype)

        images_per_call = min(batch_size, num_images)
        timesteps_per_call = max(1, batch_size // images_per_call)
        image_starts = range(0, num_images, images_per_call)
        timestep_starts = range(0, timesteps.shape[1], timesteps_per_call)
        vb = torch.zeros(num_images, timesteps.shape[1], dtype=torch.float64)
        progress = self.progress_bar(total=len(image_starts) * len(timestep_starts)) if show_progress else None
        for start in image_starts:
            x0 = x_start[start : start + images_per_call]
            for first in timestep_starts:
                chunk = timesteps[start : start + x0.shape[0], first : first + timesteps_per_call]
                terms = self._vb_terms(x0, chunk.to(device), generator, clip_denoised, respaced)  # [n x len(chunk)]
                vb[start : start + x0.shape[0], first : first + chunk.shape[1]] = terms.double().cpu()
                if progress is not None:
                    progress.update()
        if progress is not None:
            progress.close()
        prior = scheduler.prior_bpd(x_start.float(), respaced=respaced).double().cpu()
        weights = torch.as_tensor(weights, dtype=torch.float64)
        bpd = prior + (vb * weights).sum(dim=1)
        standard_error = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
        return BitsPerDimOutput(bpd, prior, vb, timesteps.clone(), weights, standard_error)

    def _vb_terms(
        self, x0: torch.Tensor, timesteps: torch.Tensor, generator, clip_denoised: bool, respaced: bool = False
    ) -> torch.Tensor:
        """The bound's terms of images `x0` [n x ...] at their timesteps [n x k]: [n x k] bits/dim."""
        n, k = timesteps.shape
        x_start = x0.repeat(k, *([1] * (x0.ndim - 1)))  # column by column: x0 k times
        t = timesteps.T.reshape(-1)
        noise = randn_tensor(x_start.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.scheduler.add_noise(x_start, noise, t)
        model_output = self.unet(x_t, t).sample
        terms = self.scheduler.vb_terms_bpd(
            model_output.float(), x_start.float(), x_t.float(), t, clip_denoised=clip_denoised, respaced=respaced
        )
        return terms.reshape(k, n).T

    def _to_model_space(self, images) -> torch.Tensor:
        """Images as an [N x C x H x W] float tensor in [-1, 1], checked against the UNet's channels."""
        if isinstance(images, torch.Tensor):
            x = images.float()
            if x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
                raise ValueError("`images` as a tensor must be in [-1, 1] (model space), [N x C x H x W].")
        else:
            if isinstance(images, (list, tuple)) and images and isinstance(images[0], PIL.Image.Image):
                images = np.stack([np.asarray(image) for image in images])
            array = np.asarray(images)
            if array.dtype != np.uint8:
                raise ValueError("`images` as an array or PIL images must be uint8 [N x H x W (x C)].")
            if array.ndim == 3:
                array = array[..., None]
            x = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.ndim != 4 or x.shape[1] != self.unet.config.in_channels:
            raise ValueError(
                f"`images` must have {self.unet.config.in_channels} channels as [N x C x H x W], got {tuple(x.shape)}."
            )
        return x

    # ------------------------------------------------------------------------------------------------------------
    # Saving and loading
    # ------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """
        Save the pipeline in the standard diffusers layout (model_index.json, unet/, scheduler/, safetensors only),
        with this module and the scheduler's module beside their configs so that
        `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)` works without hf_ddpm.

        The folder is written to a temporary sibling and moved into place at the end: an interrupted save never
        leaves a half-written pipeline behind.
        """
        if not safe_serialization:
            raise ValueError("hf_ddpm saves safetensors only: `safe_serialization` must be True.")
        if kwargs.get("push_to_hub"):
            raise ValueError("Use hf_ddpm.hub.push_pipeline (or `hf-ddpm push`) to push a saved pipeline.")
        save_directory = os.path.abspath(os.fspath(save_directory))
        parent = os.path.dirname(save_directory)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".saving-", dir=parent)
        try:
            super().save_pretrained(staging, safe_serialization=True, **kwargs)
            self._write_remote_code(staging)
            _apply_umask(staging)
            _replace_directory(staging, save_directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_remote_code(self, folder: str) -> None:
        """Record the pipeline (and our scheduler) in the list form diffusers resolves to files in the folder."""
        index_path = os.path.join(folder, "model_index.json")
        with open(index_path) as f:
            index = json.load(f)
        index["_class_name"] = [MODULE_FILE[:-3], PIPELINE_CLASS]
        shutil.copyfile(inspect.getsourcefile(type(self)), os.path.join(folder, MODULE_FILE))
        if type(self.scheduler).__name__ == SCHEDULER_CLASS:
            index["scheduler"] = [SCHEDULER_MODULE, SCHEDULER_CLASS]
            shutil.copyfile(
                inspect.getsourcefile(type(self.scheduler)),
                os.path.join(folder, "scheduler", SCHEDULER_MODULE + ".py"),
            )
        with open(index_path, "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Load a pipeline saved by hf_ddpm, or by diffusers' `DDPMPipeline` (its subfolder layout, and the flat layout
        of repos such as google/ddpm-cifar10-32), from a folder or a Hub repo id. Loads safetensors weights and JSON
        configs only: no code from the repo runs (pass `trust_remote_code=True` to use diffusers' remote-code path).

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a local folder or a Hub repo id.
            torch_dtype (`torch.dtype`, *optional*): the UNet's dtype.
            revision, cache_dir, token, local_files_only, force_download: as for `huggingface_hub.snapshot_download`.
        """
        if kwargs.get("trust_remote_code"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        torch_dtype = kwargs.pop("torch_dtype", None)
        unet = kwargs.pop("unet", None)
        scheduler = kwargs.pop("scheduler", None)
        download_kwargs = {
            k: kwargs.pop(k)
            for k in ("revision", "cache_dir", "token", "local_files_only", "force_download")
            if k in kwargs
        }
        kwargs.pop("trust_remote_code", None)
        kwargs.pop("use_safetensors", None)
        if kwargs:
            raise TypeError(f"Unexpected arguments for {cls.__name__}.from_pretrained: {', '.join(sorted(kwargs))}.")

        folder = _resolve_folder(pretrained_model_name_or_path, download_kwargs)
        index = _read_model_index(folder)
        if unet is None:
            unet = _load_unet(folder, index, torch_dtype)
        if scheduler is None:
            scheduler = _load_scheduler(folder, index)
        pipeline = cls(unet=unet, scheduler=scheduler)
        pipeline.register_to_config(_name_or_path=os.fspath(pretrained_model_name_or_path))
        return pipeline


def _frame_indices(num_steps: int, frames: int | None) -> set[int]:
    """Indices of `frames` evenly spaced steps of a chain of `num_steps`, first and last included."""
    if frames is None or frames >= num_steps:
        return set(range(num_steps))
    if frames < 1:
        raise ValueError(f"`trajectory_frames` must be at least 1, got {frames}.")
    return {int(round(i)) for i in np.linspace(0, num_steps - 1, frames)}


def _bound_timesteps(
    num_train_timesteps: int, num_timesteps: int | None, num_images: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[float]]:
    """
    The timesteps at which each image's bound is evaluated, [N x T'] ascending, and the weight of each term.

    All T terms by default. With `num_timesteps` K, the decoder term at t = 0 exactly, and the T - 1 KL terms by
    stratified sampling: [1, T) is cut into K - 1 strata of geometrically growing size (the first ones single
    timesteps, where the terms are large and change fast), and each image draws its own timestep in each stratum,
    weighted by the stratum's size. Independent draws per image make the estimate unbiased and its standard error over
    the images honest: it covers the choice of timesteps too. Exact when K = T.
    """
    if num_timesteps is None or num_timesteps >= num_train_timesteps:
        timesteps = torch.arange(num_train_timesteps).expand(num_images, -1)
        return timesteps, [1.0] * num_train_timesteps
    if num_timesteps < 2:
        raise ValueError(f"`num_timesteps` must be at least 2 (the decoder and one KL term), got {num_timesteps}.")
    edges = torch.from_numpy(bound_strata_edges(num_train_timesteps, num_timesteps - 1))
    draws = torch.rand(num_images, num_timesteps - 1, generator=generator, device=getattr(generator, "device", "cpu"))
    sizes = edges[1:] - edges[:-1]
    kl_timesteps = edges[:-1] + torch.minimum((draws.cpu().double() * sizes).long(), sizes - 1)
    timesteps = torch.cat([torch.zeros(num_images, 1, dtype=torch.long), kl_timesteps], dim=1)
    return timesteps, [1.0, *map(float, sizes.tolist())]


def bound_strata_edges(num_train_timesteps: int, num_strata: int) -> np.ndarray:
    """
    Edges 1 = e_0 < e_1 < ... < e_S = T of `num_strata` S strata [e_i, e_{i+1}) of the KL timesteps: geometric
    spacing, with every stratum at least one timestep wide.
    """
    if not 1 <= num_strata <= num_train_timesteps - 1:
        raise ValueError(f"`num_strata` must be in [1, {num_train_timesteps - 1}], got {num_strata}.")
    edges = np.round(np.geomspace(1, num_train_timesteps, num_strata + 1)).astype(np.int64)
    edges[0], edges[-1] = 1, num_train_timesteps
    for i in range(1, num_strata + 1):  # at least one timestep a stratum, from the small end...
        edges[i] = max(edges[i], edges[i - 1] + 1)
    for i in range(num_strata - 1, 0, -1):  # ...without running past T at the large end
        edges[i] = min(edges[i], edges[i + 1] - 1)
    return edges


def _apply_umask(folder: str) -> None:
    """
    Give `folder` and everything in it the modes a plain `open`/`mkdir` would: mkdtemp makes the staging folder
    private (0700) and safetensors writes its files 0600, which would hide a shared pipeline from other users.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for root, directories, files in os.walk(folder):
        for name in directories:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _replace_directory(source: str, target: str) -> None:
    """Move `source` to `target`, replacing any old `target` only once the new one is complete."""
    if os.path.isdir(target):
        old = target + ".old-" + next(tempfile._get_candidate_names())
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def _resolve_folder(name_or_path: str | os.PathLike, download_kwargs: dict) -> str:
    """A local folder as is; a repo id through huggingface_hub, fetching only what loading needs."""
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path) or name_or_path.count("/") > 1 or name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{name_or_path} is not a folder holding a saved pipeline.")
    from huggingface_hub import snapshot_download

    return snapshot_download(name_or_path, allow_patterns=LOAD_PATTERNS, **download_kwargs)


def _read_model_index(folder: str) -> dict:
    path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {folder} is not a saved diffusers pipeline.")
    try:
        with open(path) as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path} must hold a JSON object.")
    for component in ("unet", "scheduler"):
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
            raise ValueError(
                f"{path} lacks a valid `{component}` component (expected [library, class]), got {entry!r}."
            )
    return index


def _component_folder(folder: str, name: str, config_file: str) -> str | None:
    """
    The component's subfolder, or None for the flat layout with its files at the root (google/ddpm-cifar10-32).
    A component in neither place is reported by the file that is missing.
    """
    if os.path.isfile(os.path.join(folder, name, config_file)):
        return name
    if not os.path.isdir(os.path.join(folder, name)) and os.path.isfile(os.path.join(folder, config_file)):
        return None
    raise FileNotFoundError(f"{os.path.join(folder, name, config_file)} is missing: the pipeline has no `{name}`.")


def _load_unet(folder: str, index: dict, torch_dtype) -> UNet2DModel:
    if index["unet"] != ["diffusers", "UNet2DModel"]:
        raise ValueError(
            f"model_index.json in {folder} declares unet {index['unet']}; a DDPM pipeline needs UNet2DModel."
        )
    subfolder = _component_folder(folder, "unet", "config.json")
    weights_folder = os.path.join(folder, subfolder or "")
    if not any(name.endswith(".safetensors") for name in os.listdir(weights_folder)):
        raise FileNotFoundError(f"No .safetensors weights in {weights_folder} (hf_ddpm loads no pickled weights).")
    try:
        return UNet2DModel.from_pretrained(folder, subfolder=subfolder, torch_dtype=torch_dtype, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"Could not load the UNet from {weights_folder}: {error}") from error


def _load_scheduler(folder: str, index: dict) -> SchedulerMixin:
    """Our scheduler for hf_ddpm and diffusers DDPM folders; any other diffusers scheduler as recorded."""
    library, class_name = index["scheduler"]
    subfolder = _component_folder(folder, "scheduler", "scheduler_config.json")
    if class_name in (SCHEDULER_CLASS, "DDPMScheduler"):
        try:  # imported by name: this file also runs as remote code, where hf_ddpm may be absent
            scheduler_class = importlib.import_module("hf_ddpm.scheduling_ddpm_posterior").DDPMPosteriorScheduler
        except ImportError:
            raise ImportError(
                "hf_ddpm is not installed: load this pipeline with"
                " `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` or `pip install hf-ddpm`."
            ) from None
    elif library == "diffusers":
        import diffusers

        scheduler_class = getattr(diffusers, class_name, None)
        if scheduler_class is None or not issubclass(scheduler_class, SchedulerMixin):
            raise ValueError(f"model_index.json in {folder} names an unknown scheduler class {class_name!r}.")
    else:
        raise ValueError(
            f"model_index.json in {folder} names scheduler {index['scheduler']}, which hf_ddpm cannot load."
        )
    try:
        return scheduler_class.from_pretrained(folder, subfolder=subfolder)
    except (OSError, ValueError, TypeError) as error:
        config = os.path.join(folder, subfolder or "", "scheduler_config.json")
        raise ValueError(f"Could not load the scheduler from {config}: {error}") from error
