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
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import get_device, randn_tensor

MODULE_FILE = "pipeline_ddpm_posterior.py"
PIPELINE_CLASS = "DDPMPosteriorPipeline"
SCHEDULER_MODULE = "scheduling_ddpm_posterior"
SCHEDULER_CLASS = "DDPMPosteriorScheduler"
OUTPUT_TYPES = ("pil", "np", "pt")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
# diffusers' from_pretrained arguments, by where they go
DOWNLOAD_ARGUMENTS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
UNET_LOADING_ARGUMENTS = (
    "torch_dtype",
    "low_cpu_mem_usage",
    "device_map",
    "max_memory",
    "offload_folder",
    "offload_state_dict",
)
UNSUPPORTED_LOADING_ARGUMENTS = {
    "custom_pipeline": "it is a pipeline of its own; load another one with DiffusionPipeline.from_pretrained.",
    "custom_revision": "it is a pipeline of its own; load another one with DiffusionPipeline.from_pretrained.",
    "from_flax": "hf_ddpm loads safetensors weights only, never Flax checkpoints.",
    "dduf_file": "a DDUF archive holds diffusers' built-in pipelines; load a saved folder or a Hub repo instead.",
    "load_connected_pipeline": "a DDPM pipeline has no connected pipelines.",
    "quantization_config": "its UNet is small and trained in full precision; use `torch_dtype` instead.",
    "provider": "it runs on PyTorch, not ONNX Runtime.",
    "sess_options": "it runs on PyTorch, not ONNX Runtime.",
}
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
class DDPMPosteriorPipelineOutput(ImagePipelineOutput):
    """
    Output of [`DDPMPosteriorPipeline`]: diffusers' [`ImagePipelineOutput`] plus the optional trajectory.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The samples, in [0, 1]: PIL images, an [N x H x W x C] array or an [N x C x H x W] tensor.
        trajectory (`torch.Tensor`, *optional*):
            With `return_trajectory=True`: x_t at the recorded steps, [F x N x C x H x W] in [-1, 1], on the CPU.
        pred_original_trajectory (`torch.Tensor`, *optional*):
            With `return_trajectory=True`: the predicted x_0 at the same steps, [F x N x C x H x W] in [-1, 1];
            `None` with a scheduler whose `step()` returns no `pred_original_sample` (PNDM, DPM-Solver, UniPC...).
        trajectory_timesteps (`list[int]`, *optional*):
            The timestep t of each recorded frame (x_t is the input of that step).
    """

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
            Normally a `DDPMPosteriorScheduler`. Every scheduler of its `compatibles` but `EDMEulerScheduler` (made
            for EDM-preconditioned models) samples too, e.g. `DDIMScheduler.from_config(pipe.scheduler.config)`:
            the pipeline honours `init_noise_sigma` and `scale_model_input`, and drops the variance channels of a
            learned-variance UNet for a scheduler that does not read them. `bits_per_dim` needs ours.
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

    def check_scheduler(self, timesteps) -> None:
        """Refuse, before any work, a scheduler that cannot sample this pipeline's UNet."""
        scheduler = self.scheduler
        name = type(scheduler).__name__
        if hasattr(scheduler, "precondition_outputs"):  # EDMEulerScheduler and the other EDM schedulers
            raise ValueError(
                f"{name} samples models trained with EDM preconditioning (Karras et al. 2022), but this UNet predicts"
                " DDPM outputs at integer timesteps: use EulerDiscreteScheduler.from_config(pipe.scheduler.config)."
            )
        if not (callable(getattr(scheduler, "set_timesteps", None)) and callable(getattr(scheduler, "step", None))):
            raise TypeError(f"The scheduler {name} has no `set_timesteps` and `step`: it cannot sample.")
        if timesteps is not None and "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
            raise ValueError(f"{name} does not take custom `timesteps`; pass `num_inference_steps` instead.")

    def _scheduler_reads_variance(self) -> bool:
        """Whether the scheduler's step() reads a learned-variance UNet's extra channels (only DDPM's do)."""
        scheduler = self.scheduler
        learned = getattr(scheduler.config, "variance_type", None) in LEARNED_VARIANCE_TYPES
        return learned and (isinstance(scheduler, DDPMScheduler) or type(scheduler).__name__ == SCHEDULER_CLASS)

    def _step_kwargs(self, generator) -> dict:
        """`generator` for the schedulers whose step() draws noise; the others take none (as diffusers' pipelines)."""
        return {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}

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
        self.check_scheduler(timesteps)
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=self._execution_device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        chain = self.scheduler.timesteps
        recorded = _frame_indices(len(chain), trajectory_frames) if return_trajectory else set()
        trajectory, pred_original_trajectory = [], []

        # x_T at the scheduler's scale: 1 for DDPM and DDIM, sigma_max for the Euler / Heun / DPM-SDE family
        image = self._initial_noise(self._image_shape(batch_size), generator) * self.scheduler.init_noise_sigma
        channels = image.shape[1]
        split_variance = not self._scheduler_reads_variance()
        step_kwargs = self._step_kwargs(generator)
        for i, t in enumerate(self.progress_bar(chain)):
            model_output = self.unet(self.scheduler.scale_model_input(image, t), t).sample
            if split_variance and model_output.shape[1] == 2 * channels:
                # a learned-variance UNet under a scheduler that does not read variances (diffusers' IF pipeline
                # convention): keep the mean channels
                model_output = model_output[:, :channels]
            step = self.scheduler.step(model_output, t, image, **step_kwargs)
            if i in recorded:
                trajectory.append(image.float().cpu())
                pred_original = getattr(step, "pred_original_sample", None)
                if pred_original is not None:
                    pred_original_trajectory.append(pred_original.float().cpu())
            image = step.prev_sample
            if callback_on_step_end is not None:
                tensors = {"image": image}
                callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                image = callback_outputs.get("image", image)

        images = self._postprocess(image, output_type)
        self.maybe_free_model_hooks()
        trajectory_outputs = (
            (
                torch.stack(trajectory),
                torch.stack(pred_original_trajectory) if pred_original_trajectory else None,
                [int(chain[i]) for i in sorted(recorded)],
            )
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

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        """
        Save the pipeline in the standard diffusers layout (model_index.json, unet/, scheduler/, safetensors only),
        with this module and the scheduler's module beside their configs so that
        `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)` works without hf_ddpm.

        Only the pipeline's own files are replaced, each atomically (written aside, then renamed over the old one;
        model_index.json last): every other file in `save_directory` (checkpoints, notes, logs) stays where it was.
        Weight files of the same `variant` that this save did not write (the shards of an earlier save) are removed,
        so the folder never mixes two models' weights; other variants stay, as diffusers saves one variant per call.

        Args:
            save_directory (`str` or `os.PathLike`): the folder; created if needed.
            safe_serialization (`bool`, defaults to `True`): must be `True` (hf_ddpm writes safetensors only).
            variant (`str`, *optional*): save the weights as diffusion_pytorch_model.<variant>.safetensors.
            max_shard_size (`int` or `str`, *optional*): shard the weights above this size, as diffusers does.
            push_to_hub (`bool`, defaults to `False`): then push the folder in one commit, as `hf-ddpm push` does
                (needs hf_ddpm). `repo_id` (default: the folder's name), `private`, `token`, `commit_message` and
                `create_pr` go with it.
        """
        if not safe_serialization:
            raise ValueError("hf_ddpm saves safetensors only: `safe_serialization` must be True.")
        push_kwargs = {
            k: kwargs.pop(k) for k in ("repo_id", "private", "token", "commit_message", "create_pr") if k in kwargs
        }
        if kwargs:
            raise TypeError(f"Unexpected arguments for save_pretrained: {', '.join(sorted(kwargs))}.")
        if push_kwargs and not push_to_hub:
            raise ValueError(f"{', '.join(sorted(push_kwargs))} only apply with `push_to_hub=True`.")
        save_directory = os.path.abspath(os.fspath(save_directory))
        created = not os.path.isdir(save_directory)
        os.makedirs(save_directory, exist_ok=True)
        # staged inside the target: the same file system, so every os.replace below is atomic
        staging = tempfile.mkdtemp(prefix=".saving-", dir=save_directory)
        try:
            super().save_pretrained(staging, safe_serialization=True, variant=variant, max_shard_size=max_shard_size)
            self._write_remote_code(staging)
            _apply_umask(staging)
            _move_files_into(staging, save_directory, variant)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not os.listdir(save_directory):  # a failed first save leaves no empty folder behind
                os.rmdir(save_directory)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        if push_to_hub:
            self._push_to_hub(save_directory, **push_kwargs)

    @staticmethod
    def _push_to_hub(folder: str, repo_id: str | None = None, private: bool | None = None, **kwargs) -> None:
        """Push a saved folder as `hf-ddpm push` does: one commit, model card included."""
        try:  # imported by name: this file also runs as remote code, where hf_ddpm may be absent
            push_pipeline = importlib.import_module("hf_ddpm.hub").push_pipeline
        except ImportError:
            raise ImportError(
                "save_pretrained(push_to_hub=True) needs hf_ddpm (`pip install -e .` in an hf-ddpm checkout); or"
                " upload the saved folder with `huggingface_hub.upload_folder`."
            ) from None
        push_pipeline(folder, repo_id or os.path.basename(folder), private=bool(private), **kwargs)

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
            variant (`str`, *optional*): load unet/diffusion_pytorch_model.<variant>.safetensors (e.g. "fp16").
            low_cpu_mem_usage (`bool`, *optional*): as diffusers: build the UNet empty and load the weights into it.
            device_map (`str`, *optional*): as diffusers' pipelines: "balanced" (the one model of this pipeline goes
                to the first accelerator), the accelerator's name or "cpu". `max_memory`, `offload_folder` and
                `offload_state_dict` go with it, as in diffusers.
            unet, scheduler: components to use instead of the saved ones.
            revision, cache_dir, token, local_files_only, force_download, proxies: as for
                `huggingface_hub.snapshot_download`.
        """
        if kwargs.get("trust_remote_code"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        for name, reason in UNSUPPORTED_LOADING_ARGUMENTS.items():
            if kwargs.get(name) not in (None, False):
                raise ValueError(f"`{name}` does not apply to {cls.__name__}: {reason}")
            kwargs.pop(name, None)
        if kwargs.pop("use_safetensors", None) is False:
            raise ValueError("hf_ddpm loads safetensors weights only: `use_safetensors` cannot be False.")
        kwargs.pop("trust_remote_code", None)
        unet = kwargs.pop("unet", None)
        scheduler = kwargs.pop("scheduler", None)
        variant = kwargs.pop("variant", None)
        download_kwargs = {k: kwargs.pop(k) for k in DOWNLOAD_ARGUMENTS if k in kwargs}
        unet_kwargs = {k: kwargs.pop(k) for k in UNET_LOADING_ARGUMENTS if k in kwargs}
        if kwargs:
            raise TypeError(f"Unexpected arguments for {cls.__name__}.from_pretrained: {', '.join(sorted(kwargs))}.")
        device_map = _check_device_map(unet_kwargs)

        folder = _resolve_folder(pretrained_model_name_or_path, download_kwargs, variant)
        index = _read_model_index(folder)
        if unet is None:
            unet = _load_unet(folder, index, variant=variant, **unet_kwargs)
        if scheduler is None:
            scheduler = _load_scheduler(folder, index)
        pipeline = cls(unet=unet, scheduler=scheduler)
        pipeline.register_to_config(_name_or_path=os.fspath(pretrained_model_name_or_path))
        if device_map is not None:  # as diffusers records it: `.to()` is refused under "balanced"
            pipeline.hf_device_map = {"unet": unet_kwargs["device_map"]} if device_map == "balanced" else device_map
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


def _move_files_into(staging: str, target: str, variant: str | None) -> None:
    """
    Move every file of `staging` to the same place under `target`, each with one atomic rename, model_index.json
    last (it is what makes the folder a pipeline); remove the stale weights of the same variant and our scheduler
    module when the pipeline no longer uses it. Nothing else in `target` is touched.
    """
    written = sorted(
        os.path.relpath(os.path.join(root, name), staging) for root, _, names in os.walk(staging) for name in names
    )
    umask = os.umask(0)
    os.umask(umask)
    components = [path for path in written if path != "model_index.json"]
    for path in components:
        os.makedirs(os.path.dirname(os.path.join(target, path)), mode=0o777 & ~umask, exist_ok=True)
        os.replace(os.path.join(staging, path), os.path.join(target, path))
    _remove_stale_files(target, set(written), variant)
    os.replace(os.path.join(staging, "model_index.json"), os.path.join(target, "model_index.json"))


def _stale_weights_pattern(variant: str | None) -> re.Pattern:
    """The file names of a component's weights in one variant: whole, sharded, and the shard index (diffusers')."""
    suffix = re.escape(f".{variant}") if variant else ""
    return re.compile(
        rf"diffusion_pytorch_model{suffix}(-\d{{5}}-of-\d{{5}})?\.(safetensors|bin)"
        rf"|diffusion_pytorch_model\.(safetensors|bin)\.index{suffix}\.json"
    )


def _remove_stale_files(target: str, written: set[str], variant: str | None) -> None:
    pattern = _stale_weights_pattern(variant)
    unet = os.path.join(target, "unet")
    stale = [
        os.path.join("unet", name)
        for name in (os.listdir(unet) if os.path.isdir(unet) else [])
        if pattern.fullmatch(name) and os.path.join("unet", name) not in written
    ]
    scheduler_module = os.path.join("scheduler", SCHEDULER_MODULE + ".py")
    if scheduler_module not in written:
        stale.append(scheduler_module)
    for path in stale:
        if os.path.isfile(os.path.join(target, path)):
            os.remove(os.path.join(target, path))


def _check_device_map(unet_kwargs: dict) -> str | None:
    """Validate `device_map` as diffusers' pipelines do; "balanced" becomes the device of the pipeline's one model."""
    device_map = unet_kwargs.get("device_map")
    if device_map is None:
        return None
    supported = ["balanced", get_device(), "cpu"]
    if not isinstance(device_map, str) or device_map not in supported:
        raise ValueError(
            f"`device_map` must be one of {', '.join(map(repr, dict.fromkeys(supported)))}, got {device_map!r}."
        )
    if unet_kwargs.get("low_cpu_mem_usage") is False:
        raise ValueError(
            f"`low_cpu_mem_usage=False` cannot go with `device_map={device_map!r}`: dispatching needs it."
        )
    if device_map == "balanced":  # nothing to balance across one model: it goes to the first accelerator
        unet_kwargs["device_map"] = 0 if get_device() not in ("cpu", "mps") else get_device()
    return device_map


def _resolve_folder(name_or_path: str | os.PathLike, download_kwargs: dict, variant: str | None = None) -> str:
    """
    A local folder as is; a repo id through huggingface_hub, fetching only what loading needs. A name that can only
    be a path (or whose first part is a local folder) and does not exist is reported as a missing folder, not as a
    failed download.
    """
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path):
        raise FileNotFoundError(f"{name_or_path} is a file, not a folder holding a saved pipeline.")
    looks_like_a_path = (
        name_or_path.count("/") != 1
        or name_or_path.startswith((".", "/", "~"))
        or name_or_path.endswith("/")
        or os.sep != "/"
        and os.sep in name_or_path
        or os.path.isdir(name_or_path.split("/")[0])
    )
    if looks_like_a_path:
        raise FileNotFoundError(f"No such folder: {name_or_path} (expected a folder holding a saved pipeline).")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = LOAD_PATTERNS
    if variant is not None:  # that variant's weights only, as diffusers downloads them
        patterns = [p for p in LOAD_PATTERNS if not p.endswith(".safetensors")]
        patterns += [f"unet/*.{variant}*.safetensors", f"*.{variant}*.safetensors", f"unet/*.index.{variant}.json"]
    try:
        return snapshot_download(name_or_path, allow_patterns=patterns, **download_kwargs)
    except (LocalEntryNotFoundError, RepositoryNotFoundError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(
            f"No such folder: {name_or_path}, and no Hub repo of that name could be fetched ({reason})."
        ) from error


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


def _load_unet(folder: str, index: dict, variant: str | None = None, **unet_kwargs) -> UNet2DModel:
    """The UNet, after checking its config against UNet2DModel's signature and its size against the weights."""
    if index["unet"] != ["diffusers", "UNet2DModel"]:
        raise ValueError(
            f"model_index.json in {folder} declares unet {index['unet']}; a DDPM pipeline needs UNet2DModel."
        )
    subfolder = _component_folder(folder, "unet", "config.json")
    weights_folder = os.path.join(folder, subfolder or "")
    _check_unet_config(os.path.join(weights_folder, "config.json"), _weight_files(weights_folder, variant))
    try:
        return UNet2DModel.from_pretrained(
            folder, subfolder=subfolder, variant=variant, use_safetensors=True, **unet_kwargs
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"Could not load the UNet from {weights_folder}: {error}") from error


def _weight_files(weights_folder: str, variant: str | None) -> list[str]:
    """The safetensors files of the UNet weights in `variant` (the shards, for sharded weights)."""
    suffix = f".{variant}" if variant else ""
    single = os.path.join(weights_folder, f"diffusion_pytorch_model{suffix}.safetensors")
    sharded = os.path.join(weights_folder, f"diffusion_pytorch_model.safetensors.index{suffix}.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(sharded):
        try:
            with open(sharded) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{sharded} is not a valid shard index: {error}") from None
        return [os.path.join(weights_folder, shard) for shard in shards]
    names = os.listdir(weights_folder)
    variants = sorted(
        {m.group(1) for m in map(re.compile(r"diffusion_pytorch_model\.(\w+)\.safetensors").fullmatch, names) if m}
    )
    hint = f"; it holds the variant(s) {', '.join(variants)}: pass `variant=`" if variants else ""
    if not variants and not any(name.endswith(".safetensors") for name in names):
        hint = " (hf_ddpm loads no pickled weights)"
    raise FileNotFoundError(f"No {os.path.basename(single)} in {weights_folder}{hint}.")


# Bounds that no real UNet2DModel reaches, so that a config cannot make loading build millions of modules
MAX_UNET_BLOCKS, MAX_LAYERS_PER_BLOCK, MAX_SAMPLE_SIZE = 16, 64, 16384


def _check_unet_config(config_path: str, weight_files: list[str]) -> None:
    """
    Refuse, before building anything, a UNet config whose fields have the wrong type or which describes a model of
    another size than its weights (a config asking for terabytes is caught here, built on the meta device).
    """
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object.")
    parameters = inspect.signature(UNet2DModel.__init__).parameters
    for name, value in config.items():
        if name in parameters and not _matches_annotation(value, parameters[name].annotation):
            raise ValueError(
                f"{config_path}: `{name}` must be {_describe(parameters[name].annotation)}, got {value!r}."
            )
    blocks, layers = config.get("block_out_channels", ()), config.get("layers_per_block", 1)
    sample_size = config.get("sample_size") or 0
    for name, value, bound in (
        ("block_out_channels", len(blocks), MAX_UNET_BLOCKS),
        ("layers_per_block", layers, MAX_LAYERS_PER_BLOCK),
        ("sample_size", max(sample_size) if isinstance(sample_size, list) else sample_size, MAX_SAMPLE_SIZE),
    ):
        if value > bound:
            raise ValueError(f"{config_path}: `{name}` asks for {value}; hf_ddpm allows at most {bound}.")
    try:
        with torch.device("meta"):  # shapes only: no memory is allocated
            model = UNet2DModel.from_config(config)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError) as error:
        raise ValueError(f"{config_path} does not describe a valid UNet2DModel: {error}") from None
    expected = sum(tensor.numel() for tensor in model.state_dict().values())
    stored = _stored_numel(weight_files)
    if expected != stored:
        raise ValueError(
            f"{config_path} describes a UNet of {expected:,} weights (block_out_channels={blocks},"
            f" layers_per_block={layers}) but {', '.join(map(os.path.basename, weight_files))} holds {stored:,}:"
            " the config and the weights do not match."
        )


def _stored_numel(weight_files: list[str]) -> int:
    """How many numbers the safetensors files hold, from their headers alone."""
    from safetensors import safe_open

    total = 0
    for path in weight_files:
        try:
            with safe_open(path, framework="pt") as f:
                total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
        except Exception as error:  # safetensors' own SafetensorError is a bare Exception
            raise ValueError(f"Could not read the weights {path}: {error}") from None
    return total


def _matches_annotation(value, annotation) -> bool:
    """Whether a JSON value fits a type hint of UNet2DModel's constructor (JSON lists stand for tuples)."""
    if annotation is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches_annotation(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches_annotation(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(_matches_annotation, value, args))
    return True


def _describe(annotation) -> str:
    """A type hint in words: `int | tuple[int, int] | None` -> "an int, a list of 2 ints or null"."""
    words = {int: "an int", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [_describe(arg) for arg in typing.get_args(annotation)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        item = _describe(args[0]).split(" ", 1)[-1] + "s"
        return f"a list of {item}" if args[-1] is Ellipsis else f"a list of {len(args)} {item}"
    return words.get(annotation, str(annotation))


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
                " `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)`, or install it"
                " (`pip install -e .` in an hf-ddpm checkout)."
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
