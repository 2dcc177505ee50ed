# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The DDPM sampling pipeline: ancestral sampling, the denoising trajectory, and bits/dim of given images.

Like the scheduler module, this file imports only torch, numpy, diffusers and huggingface_hub: it is copied into every
saved pipeline folder so that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` works where hf_ddpm
is not installed.
"""

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
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import PIL.Image
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

MODULE_FILE = "pipeline_ddpm_posterior.py"
PIPELINE_CLASS = "DDPMPosteriorPipeline"
SCHEDULER_MODULE = "scheduling_ddpm_posterior"
SCHEDULER_CLASS = "DDPMPosteriorScheduler"
OUTPUT_TYPES = ("pil", "np", "pt")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
# What loading reads from a repo: configs and safetensors weights, never code or pickles (hf_ddpm.hub pulls these)
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
# diffusers builds every block of a UNet config, on the meta device too, before it reads a weight: a config asking
# for a million layers takes minutes and all the memory before it fails. No real UNet2DModel comes near these.
MAX_UNET_BLOCKS, MAX_LAYERS_PER_BLOCK = 16, 64
# A sampler recovers x_0 as (x_t - sqrt(1 - alpha-bar) eps) / sqrt(alpha-bar), amplifying the UNet's error by
# 1 / sqrt(alpha-bar). On the shipped cosine model, Euler and DPM-Solver++ at 25 steps score fd-digits 10-11 from
# t = 990 (alpha-bar 2e-4), 15-19 from 995 (3.9e-5), 24-29 from 996 (2.2e-5) and 120+ from 998 (2.4e-6); the cosine
# t = 999 is 2.4e-9, the linear schedule's 4.0e-5 (benchmarks/fast_samplers.py, n = 300). Only DDPM's ancestral
# steps, which clip x_0 and draw fresh noise, start anywhere: DDIM from t = 999 scores 11 where ours scores 4-6.
MIN_START_ALPHA_BAR = 3e-5


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
            learned-variance UNet for a scheduler that does not read them. One that would start where alpha-bar is
            too small for it (t = 999 of the cosine schedule) is refused, naming the option that moves its start
            (`timestep_spacing="leading"`). `bits_per_dim` needs ours.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    # ------------------------------------------------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------------------------------------------------

    def check_inputs(self, batch_size, generator, output_type, callback_on_step_end_tensor_inputs) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"`generator` is a list of {len(generator)} generators for `batch_size`={batch_size}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(
                f"`output_type` must be one of {', '.join(map(repr, OUTPUT_TYPES))}, got {output_type!r}."
            )
        if set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs):
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may only hold {self._callback_tensor_inputs}.")

    def _prepare_timesteps(self, num_inference_steps: int, timesteps: list[int] | None) -> None:
        """
        Set the scheduler's chain, refusing a scheduler that cannot sample this UNet: one made for EDM
        preconditioning, or one whose chain starts where alpha-bar is too small for it (`_check_first_timestep`).
        """
        scheduler, name = self.scheduler, type(self.scheduler).__name__
        if hasattr(scheduler, "precondition_outputs"):  # EDMEulerScheduler and the other EDM schedulers
            raise ValueError(
                f"{name} samples models trained with EDM preconditioning (Karras et al. 2022), but this UNet predicts"
                " DDPM outputs at integer timesteps: use EulerDiscreteScheduler.from_config(pipe.scheduler.config)."
            )
        if timesteps is None:
            scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        elif "timesteps" in inspect.signature(scheduler.set_timesteps).parameters:
            scheduler.set_timesteps(timesteps=timesteps, device=self._execution_device)
        else:
            raise ValueError(f"{name} does not take custom `timesteps`; pass `num_inference_steps` instead.")
        self._check_first_timestep()

    def _check_first_timestep(self) -> None:
        """Refuse a scheduler whose chain starts where alpha-bar is too small for it (DDPM's clipped steps are not)."""
        scheduler, name = self.scheduler, type(self.scheduler).__name__
        ancestral = isinstance(scheduler, DDPMScheduler) or name == SCHEDULER_CLASS
        if ancestral and (scheduler.config.get("clip_sample") or scheduler.config.get("thresholding")):
            return
        first = int(round(float(scheduler.timesteps[0])))
        alpha_bar = float(scheduler.alphas_cumprod[first]) if hasattr(scheduler, "alphas_cumprod") else 1.0
        if alpha_bar >= MIN_START_ALPHA_BAR:
            return
        parameters = inspect.signature(type(scheduler).__init__).parameters
        if "timestep_spacing" in parameters:
            remedy = f"swap it in with `{name}.from_config(pipe.scheduler.config, timestep_spacing='leading')`"
        elif "lambda_min_clipped" in parameters:
            remedy = f"swap it in with `{name}.from_config(pipe.scheduler.config, lambda_min_clipped=-5.1)`"
        else:
            remedy = "use DDPMPosteriorScheduler"
        raise ValueError(
            f"{name} starts at t={first}, where alpha-bar is {alpha_bar:.1e}: its x_0 estimate amplifies the UNet's"
            f" error {alpha_bar**-0.5:,.0f} times, which only DDPM's clipped ancestral steps absorb; {remedy} (or use"
            " fewer steps)."
        )

    def _reads_variance(self) -> bool:
        """Whether the scheduler's step() reads a learned-variance UNet's extra channels (only DDPM's do)."""
        scheduler = self.scheduler
        learned = scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES
        return learned and (isinstance(scheduler, DDPMScheduler) or type(scheduler).__name__ == SCHEDULER_CLASS)

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
        self._prepare_timesteps(num_inference_steps, timesteps)
        chain = self.scheduler.timesteps
        recorded = _frame_indices(len(chain), trajectory_frames) if return_trajectory else set()
        trajectory, pred_original_trajectory = [], []

        sample_size = self.unet.config.sample_size
        size = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        channels = self.unet.config.in_channels
        device = self._execution_device
        # randn is not reproducible on mps: drawn on the CPU there, as DDPMPipeline does
        noise_device = "cpu" if device.type == "mps" else device
        image = randn_tensor(
            (batch_size, channels, *size), generator=generator, device=noise_device, dtype=self.unet.dtype
        )
        # x_T at the scheduler's scale: 1 for DDPM and DDIM, sigma_max for the Euler / Heun / DPM-SDE family
        image = image.to(device) * self.scheduler.init_noise_sigma
        # a scheduler that does not read variances gets the mean channels only (diffusers' IF pipeline convention)
        output_channels = None if self._reads_variance() else channels
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )
        for i, t in enumerate(self.progress_bar(chain)):
            model_output = self.unet(self.scheduler.scale_model_input(image, t), t).sample[:, :output_channels]
            step = self.scheduler.step(model_output, t, image, **step_kwargs)
            if i in recorded:
                trajectory.append(image.float().cpu())
                if getattr(step, "pred_original_sample", None) is not None:
                    pred_original_trajectory.append(step.pred_original_sample.float().cpu())
            image = step.prev_sample
            if callback_on_step_end is not None:
                callback_kwargs = {name: image for name in callback_on_step_end_tensor_inputs}
                image = (callback_on_step_end(self, i, t, callback_kwargs) or {}).get("image", image)

        outputs = (self._postprocess(image, output_type),)
        self.maybe_free_model_hooks()
        if return_trajectory:
            outputs += (
                torch.stack(trajectory),
                torch.stack(pred_original_trajectory) if pred_original_trajectory else None,
                [int(chain[i]) for i in sorted(recorded)],
            )
        return DDPMPosteriorPipelineOutput(*outputs) if return_dict else outputs

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

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """
        Save the pipeline with `DiffusionPipeline.save_pretrained` (model_index.json, unet/, scheduler/, safetensors
        only), plus this module at the folder's root (our scheduler writes its own beside its config), so that
        `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)` works without hf_ddpm.

        The save is staged in a folder inside `save_directory`, then each file is moved into place with one rename
        (model_index.json last), the file it replaces set aside: if a move fails, everything goes back, so a failed
        save leaves the folder as it was. Every other file in `save_directory` (checkpoints, notes, logs) stays.
        Weights of the same `variant` that this save did not write (an earlier save's shards) are removed, so the
        folder never mixes two models' weights; other variants stay, as diffusers saves one variant per call.

        Args:
            save_directory (`str` or `os.PathLike`): the folder; created if needed.
            push_to_hub (`bool`, defaults to `False`): then upload the files this save wrote, and a model card, in one
                commit (never the folder's other files). `repo_id` (default: the folder's name), `private`, `token`,
                `commit_message` and `create_pr` go with it. Refused, before anything is sent, if those bytes hold the
                token passed or this machine's Hub token.
            kwargs: passed to `DiffusionPipeline.save_pretrained` (`variant`, `max_shard_size`, ...);
                `safe_serialization` must stay `True`.
        """
        if kwargs.get("safe_serialization") is False:
            raise ValueError("hf_ddpm saves safetensors only: `safe_serialization` must be True.")
        push_kwargs = {
            key: kwargs.pop(key) for key in ("private", "token", "commit_message", "create_pr") if key in kwargs
        }
        save_directory = os.path.abspath(save_directory)
        repo_id = kwargs.pop("repo_id", os.path.basename(save_directory))
        created = not os.path.isdir(save_directory)
        os.makedirs(save_directory, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".saving-", dir=save_directory)  # one file system: every rename is atomic
        try:
            super().save_pretrained(os.path.join(staging, "new"), **kwargs)
            self._write_remote_code(os.path.join(staging, "new"))
            written = _files_under(os.path.join(staging, "new"))
            if push_to_hub:  # the bytes that are checked for tokens are the bytes that are sent
                contents = {path: Path(staging, "new", path).read_bytes() for path in written}
            in_place = [path.relative_to(save_directory).as_posix() for path in Path(save_directory).glob("*/*")]
            _move_into(staging, save_directory, written, _stale_files(in_place, written, kwargs.get("variant")))
        except BaseException:
            if created:  # a failed first save leaves no folder behind
                shutil.rmtree(save_directory, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if push_to_hub:
            _push(contents, repo_id, kwargs.get("variant"), **push_kwargs)

    def _write_remote_code(self, folder: str) -> None:
        """Copy this module into `folder` and record both modules in the list form diffusers resolves to its files."""
        index_path = os.path.join(folder, "model_index.json")
        with open(index_path) as f:
            index = json.load(f)
        index["_class_name"] = [MODULE_FILE[:-3], PIPELINE_CLASS]
        if type(self.scheduler).__name__ == SCHEDULER_CLASS:  # its save_pretrained wrote the module to scheduler/
            index["scheduler"] = [SCHEDULER_MODULE, SCHEDULER_CLASS]
        with open(index_path, "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        shutil.copyfile(inspect.getsourcefile(type(self)), os.path.join(folder, MODULE_FILE))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "DDPMPosteriorPipeline":
        r"""
        Load a pipeline saved by hf_ddpm or by diffusers' `DDPMPipeline` (the flat layout of google/ddpm-* too, every
        file at the repo root) from a folder or a Hub repo id, running no code from the repo: the UNet with
        `UNet2DModel.from_pretrained` (safetensors only), the scheduler with its class's `from_pretrained`, a
        `DDPMScheduler` config read as a [`DDPMPosteriorScheduler`]. With `trust_remote_code=True`, this is
        `DiffusionPipeline.from_pretrained`, which runs the modules saved in the folder.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a local folder or a Hub repo id.
            unet, scheduler (*optional*): components to use instead of the saved ones.
            kwargs: diffusers' loading arguments (`torch_dtype`, `variant`, `revision`, `token`, `device_map`,
                `low_cpu_mem_usage`...), passed unchanged to both components' `from_pretrained`.
        """
        if kwargs.get("trust_remote_code"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        kwargs.pop("trust_remote_code", None)
        if kwargs.pop("use_safetensors", True) is False:
            raise ValueError("hf_ddpm loads safetensors weights only, never a pickle: `use_safetensors` must be True.")
        unet, scheduler = kwargs.pop("unet", None), kwargs.pop("scheduler", None)
        name = os.fspath(pretrained_model_name_or_path)
        # a name that can only be a path: a missing folder, rather than a failed download
        if not os.path.isdir(name) and (
            name.count("/") != 1 or name.startswith((".", "/", "~")) or os.path.isdir(name.split("/")[0])
        ):
            raise FileNotFoundError(f"No such folder: {name} (expected a folder holding a saved pipeline).")
        index = cls.load_config(name, **kwargs)
        scheduler_class = _scheduler_class(index, name)
        config, subfolder = _component_config(UNet2DModel, name, "unet", kwargs)
        if unet is None:
            unet = _load_unet(name, index, config, subfolder, kwargs)
        if scheduler is None:
            scheduler = scheduler_class.from_pretrained(name, subfolder=subfolder and "scheduler", **kwargs)
        pipeline = cls(unet=unet, scheduler=scheduler)
        pipeline.register_to_config(_name_or_path=name)
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


# ----------------------------------------------------------------------------------------------------------------
# Loading: what diffusers' component loaders do not check
# ----------------------------------------------------------------------------------------------------------------


def _component_config(component_class, name: str, subfolder: str, kwargs: dict) -> tuple[dict, str | None]:
    """A component's config and its subfolder: `subfolder`, or None in the flat layout of google/ddpm-*."""
    try:
        return component_class.load_config(name, subfolder=subfolder, **kwargs), subfolder
    except OSError as error:
        try:
            return component_class.load_config(name, **kwargs), None
        except OSError:
            raise error from None


def _scheduler_class(index: dict, name: str) -> type[SchedulerMixin]:
    """Our scheduler for hf_ddpm and diffusers DDPM pipelines; any other diffusers scheduler as recorded."""
    entry = index.get("scheduler")
    library, class_name = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
    if class_name in (SCHEDULER_CLASS, "DDPMScheduler"):
        # imported here, relatively: diffusers copies the module of a `from .module import` line found anywhere in
        # this file next to it when it runs as remote code, but our scheduler module lives in scheduler/ there
        from . import scheduling_ddpm_posterior

        return scheduling_ddpm_posterior.DDPMPosteriorScheduler
    scheduler_class = getattr(diffusers, str(class_name), None) if library == "diffusers" else None
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
        raise ValueError(f"model_index.json of {name} declares `scheduler` {entry!r}, not a diffusers scheduler.")
    return scheduler_class


def _load_unet(name: str, index: dict, config: dict, subfolder: str | None, kwargs: dict) -> UNet2DModel:
    """The UNet, with diffusers' loader, after the checks it does not make."""
    where = os.path.join(name, subfolder or "")
    if index.get("unet") != ["diffusers", "UNet2DModel"]:
        raise ValueError(f"model_index.json of {name} declares `unet` {index.get('unet')!r}, not UNet2DModel.")
    _check_unet_config(config, os.path.join(where, "config.json"))
    try:
        return UNet2DModel.from_pretrained(name, subfolder=subfolder, use_safetensors=True, **kwargs)
    except (ValueError, TypeError, RuntimeError) as error:  # a config it cannot build, weights of other shapes...
        raise ValueError(f"Could not load the UNet from {where}: {error}") from error


def _check_unet_config(config: dict, where: str) -> None:
    """
    Refuse, before diffusers builds it, a UNet config with a field of the wrong JSON type (diffusers checks none: it
    fails deep inside a constructor, or loads) or with more blocks or layers than any real UNet2DModel.
    """
    parameters = inspect.signature(UNet2DModel.__init__).parameters
    for key, value in config.items():
        if key in parameters and not _fits(value, parameters[key].annotation):
            hint = inspect.formatannotation(parameters[key].annotation).replace("tuple", "list")
            raise ValueError(f"{where}: `{key}` must be {hint}, got {value!r:.100}.")
    for key, value, bound in (
        ("block_out_channels", len(config.get("block_out_channels", ())), MAX_UNET_BLOCKS),
        ("layers_per_block", config.get("layers_per_block", 1), MAX_LAYERS_PER_BLOCK),
    ):
        if value > bound:
            raise ValueError(f"{where}: `{key}` asks for {value}; hf_ddpm allows at most {bound}.")


def _fits(value, annotation) -> bool:
    """Whether a JSON value fits a type hint of UNet2DModel's constructor (JSON lists stand for tuples)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_fits(value, member) for member in typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple:
        members = typing.get_args(annotation)
        if members[-1:] == (Ellipsis,) and isinstance(value, list):
            members = members[:1] * len(value)
        return isinstance(value, list) and len(value) == len(members) and all(map(_fits, value, members))
    if annotation is float:
        return type(value) in (int, float)
    return annotation not in (int, bool, str, type(None)) or type(value) is annotation


# ----------------------------------------------------------------------------------------------------------------
# Saving: moving a staged save into place, and pushing exactly what it wrote
# ----------------------------------------------------------------------------------------------------------------


def _files_under(folder: str) -> list[str]:
    """The files under `folder`, as relative POSIX paths, model_index.json last (it makes a folder a pipeline)."""
    paths = sorted(path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.is_file())
    return sorted(paths, key=lambda path: path == "model_index.json")


def _stale_files(paths: list[str], written, variant: str | None) -> list[str]:
    """
    Of a folder's or a repo's `paths`, the pipeline files an earlier save wrote that this one (`written`) does not
    replace: the weights of the same variant (its shards and their index) and our scheduler module once the
    scheduler is another one.
    """
    suffix = re.escape(f".{variant}") if variant else ""
    stale = re.compile(
        rf"unet/diffusion_pytorch_model{suffix}(-\d{{5}}-of-\d{{5}})?\.(safetensors|bin)"
        rf"|unet/diffusion_pytorch_model\.(safetensors|bin)\.index{suffix}\.json"
        rf"|scheduler/{SCHEDULER_MODULE}\.py"
    )
    return [path for path in paths if stale.fullmatch(path) and path not in written]


def _move_into(staging: str, target: str, written: list[str], stale: list[str]) -> None:
    """
    Move the staged files (`staging`/new/...) to their places in `target`, in order, and the `stale` ones out, each
    file they replace first set aside in `staging`/old. If a move fails, the files moved in are removed, the old ones
    put back and the folders made removed: `target` is as it was.
    """
    umask = os.umask(0)
    os.umask(umask)
    moved_in, set_aside, made = [], [], []
    try:
        for path in [*stale, *written]:
            destination = os.path.join(target, path)
            if os.path.isfile(destination) or os.path.islink(destination):
                os.makedirs(os.path.dirname(os.path.join(staging, "old", path)), exist_ok=True)
                os.replace(destination, os.path.join(staging, "old", path))
                set_aside.append(path)
            if path in written:
                if not os.path.isdir(os.path.dirname(destination)):
                    os.mkdir(os.path.dirname(destination))
                    made.append(os.path.dirname(destination))
                os.chmod(os.path.join(staging, "new", path), 0o666 & ~umask)  # safetensors writes its files 0600
                os.replace(os.path.join(staging, "new", path), destination)
                moved_in.append(path)
    except BaseException:
        for path in moved_in:
            os.remove(os.path.join(target, path))
        for path in set_aside:
            os.replace(os.path.join(staging, "old", path), os.path.join(target, path))
        for folder in made:
            os.rmdir(folder)
        raise


def _push(
    contents: dict[str, bytes],
    repo_id: str,
    variant: str | None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> None:
    """
    Upload `contents` (path -> bytes) and a model card in one commit that also deletes the weights they replace,
    after refusing, before anything is sent, files that hold the token passed or this machine's Hub token.
    """
    from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

    for secret in {token, get_token()} - {None, ""}:
        for path, data in contents.items():
            if secret in path or secret.encode() in data:
                raise ValueError(f"Refusing to push: {path} holds a Hub token; nothing was uploaded.")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    card = populate_model_card(load_or_create_model_card(repo_id, token=token, is_pipeline=True))
    operations = [CommitOperationAdd(path, data) for path, data in contents.items()]
    operations.append(CommitOperationAdd("README.md", str(card).encode()))
    stale = _stale_files(api.list_repo_files(repo_id), contents, variant)
    operations += [CommitOperationDelete(path) for path in stale]
    api.create_commit(
        repo_id, operations, commit_message=commit_message or f"Upload {PIPELINE_CLASS}", create_pr=create_pr
    )
