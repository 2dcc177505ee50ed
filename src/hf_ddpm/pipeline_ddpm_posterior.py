# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The DDPM pipeline: ancestral sampling, the denoising trajectory, and bits/dim of images. It imports only torch,
numpy, diffusers and huggingface_hub: it travels as remote code in every saved folder.
"""

import inspect
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import PIL.Image
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.models.embeddings import Timesteps
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

PIPELINE_CLASS = "DDPMPosteriorPipeline"
SCHEDULER_CLASS = "DDPMPosteriorScheduler"
# our component classes, each saved with its module beside its config, as `trust_remote_code=True` loads them
REMOTE_CODE = {
    "DDPMPosteriorScheduler": "scheduler/scheduling_ddpm_posterior.py",
    "ADMUNet2DModel": "unet/unet_2d_adm.py",
}
OUTPUT_TYPES = ("pil", "np", "pt")
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
# diffusers builds every block of a UNet config before it reads a weight: a config asking for a million layers takes
# minutes and all the memory before it fails. No real UNet comes near these.
MAX_UNET_BLOCKS, MAX_LAYERS_PER_BLOCK = 16, 64
# A sampler's x_0 = (x_t - sqrt(1 - alpha-bar) eps) / sqrt(alpha-bar) amplifies the UNet's error 1 / sqrt(alpha-bar)
# times. On the shipped cosine model at 25 steps, Euler and DPM-Solver++ score fd-digits 10-11 from alpha-bar 2e-4,
# 24-29 from 2.2e-5 and 120+ from 2.4e-6 (the cosine t = 999 is 2.4e-9, the linear one 4.0e-5); only DDPM's clipped
# ancestral steps start anywhere (benchmarks/fast_samplers.py).
MIN_START_ALPHA_BAR = 3e-5


@dataclass
class DDPMPosteriorPipelineOutput(ImagePipelineOutput):
    """
    [`ImagePipelineOutput`] (`images` in [0, 1]) plus, with `return_trajectory=True`: `trajectory`, x_t at the
    recorded steps, [F x N x C x H x W] in [-1, 1] on the CPU; `pred_original_trajectory`, the predicted x_0 there
    (`None` from a scheduler whose `step()` returns none); `trajectory_timesteps`, the timestep t of each frame. From
    a class-conditional UNet: `class_labels`, each image's class [N] on the CPU (given, or drawn).
    """

    trajectory: torch.Tensor | None = None
    pred_original_trajectory: torch.Tensor | None = None
    trajectory_timesteps: list[int] | None = None
    class_labels: torch.Tensor | None = None


@dataclass
class BitsPerDimOutput(BaseOutput):
    """
    The variational bound of N images (Ho et al. eq. 5) in bits/dim: `bpd` [N] = `prior_bpd` [N] + the sum of the
    terms `vb_bpd` [N x T'] (column 0 the decoder) at `timesteps` [N x T'] (ascending), times their `weights` [T'];
    `standard_error` of the mean bpd.
    """

    bpd: torch.Tensor
    prior_bpd: torch.Tensor
    vb_bpd: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor
    standard_error: float


class DDPMPosteriorPipeline(DiffusionPipeline):
    r"""
    Pipeline for image generation with DDPM and Improved DDPM models, unconditional or class-conditional.

    Parameters:
        unet ([`UNet2DModel`]): the denoiser (twice the image channels out with learned variances).
        scheduler ([`SchedulerMixin`]): a `DDPMPosteriorScheduler`, or one of its `compatibles` (e.g.
            `DDIMScheduler.from_config(pipe.scheduler.config)`) but EDM's and those whose chain starts where alpha-bar
            is too small for them (refused, naming the option that moves the start). `bits_per_dim` needs ours.
        timestep_scale (`float`, *optional*): the UNet sees t * timestep_scale (improved-diffusion's rescaled
            timesteps: 1000 / T), set as its `time_proj.scale`; `None` keeps the UNet's (1 for a new one).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin, timestep_scale: float | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        time_proj = getattr(unet, "time_proj", None)
        if timestep_scale is not None and timestep_scale != getattr(time_proj, "scale", 1.0):
            if not isinstance(time_proj, Timesteps):
                raise ValueError("`timestep_scale` needs a UNet with the sinusoidal time embedding ('positional').")
            time_proj.scale = timestep_scale
        self.register_to_config(timestep_scale=float(getattr(time_proj, "scale", 1.0)))

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

    def _check_class_labels(self, class_labels, count: int) -> torch.Tensor | None:
        """`class_labels` as a [count] long tensor on the execution device, checked against the UNet's classes."""
        num_classes = self.unet.config.get("num_class_embeds")
        if class_labels is None:
            return None
        if num_classes is None:
            raise ValueError("`class_labels` were given, but this UNet is not class-conditional.")
        try:
            labels = torch.as_tensor(class_labels)
            valid = labels.dtype in INTEGER_DTYPES and labels.shape == (count,)  # not bool, not uint64
            valid = valid and bool(((labels >= 0) & (labels < num_classes)).all())
        except (TypeError, ValueError, RuntimeError, OverflowError):  # strings, None, 2**70, meta tensors...
            valid = False
        if not valid:
            raise ValueError(f"`class_labels` must be {count} ints in [0, {num_classes}), got {class_labels!r:.100}.")
        return labels.to(self._execution_device, torch.long)

    def _random_class_labels(self, batch_size: int, generator) -> torch.Tensor:
        """A class per image from the caller's generator(s), drawn before the noise as the originals' samplers do."""
        if isinstance(generator, list):  # a generator per image: each draws its image's class
            return torch.cat([self._random_class_labels(1, each) for each in generator])
        device = getattr(generator, "device", "cpu")
        labels = torch.randint(self.unet.config.num_class_embeds, (batch_size,), generator=generator, device=device)
        return labels.to(self._execution_device)

    def _prepare_timesteps(self, num_inference_steps: int, timesteps: list[int] | None) -> None:
        """Set the scheduler's chain, refusing a scheduler that cannot sample this UNet."""
        scheduler, name = self.scheduler, type(self.scheduler).__name__
        if hasattr(scheduler, "precondition_outputs"):  # EDMEulerScheduler and the other EDM schedulers
            raise ValueError(
                f"{name} samples models trained with EDM preconditioning (Karras et al. 2022), but this UNet predicts"
                " DDPM outputs at integer timesteps: use EulerDiscreteScheduler.from_config(pipe.scheduler.config)."
            )
        if timesteps is None:
            scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        else:  # a scheduler without custom timesteps says so (a TypeError naming `timesteps`)
            scheduler.set_timesteps(timesteps=timesteps, device=self._execution_device)
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

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        timesteps: list[int] | None = None,
        class_labels: list[int] | torch.Tensor | None = None,
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
            batch_size (`int`, defaults to 1): the number of images.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): gives `DDPMPipeline`'s images.
            num_inference_steps (`int`, defaults to 1000): fewer than the training steps respace the chain.
            timesteps (`list[int]`, *optional*): custom descending timesteps, instead of `num_inference_steps`.
            class_labels (`list[int]` or `torch.Tensor`, *optional*): a class per image (class-conditional UNets);
                drawn from `generator` when omitted.
            output_type (`"pil"`, `"np"` or `"pt"`, defaults to `"pil"`): the format of the images.
            return_dict (`bool`, defaults to `True`): return a [`DDPMPosteriorPipelineOutput`], not a tuple.
            callback_on_step_end (`Callable`, *optional*): `callback_on_step_end(pipe, i, t, callback_kwargs)` after
                each step; a returned dict replaces the tensors (`callback_on_step_end_tensor_inputs`) it names.
            return_trajectory (`bool`, defaults to `False`): also return x_t and the predicted x_0 along the chain.
            trajectory_frames (`int`, *optional*): record only this many evenly spaced steps, first and last included.

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
        class_labels = self._check_class_labels(class_labels, batch_size)
        if class_labels is None and self.unet.config.get("num_class_embeds") is not None:
            class_labels = self._random_class_labels(batch_size, generator)
        self._prepare_timesteps(num_inference_steps, timesteps)
        chain = self.scheduler.timesteps
        if return_trajectory and trajectory_frames is not None and trajectory_frames < 1:
            raise ValueError(f"`trajectory_frames` must be at least 1, got {trajectory_frames}.")
        frames = min(trajectory_frames or len(chain), len(chain))
        recorded = {int(round(i)) for i in np.linspace(0, len(chain) - 1, frames)} if return_trajectory else set()
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
        # only DDPM's step reads a learned variance: the others get the mean channels (diffusers' IF convention)
        ddpm_step = isinstance(self.scheduler, DDPMScheduler) or type(self.scheduler).__name__ == SCHEDULER_CLASS
        learned = self.scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES
        output_channels = None if ddpm_step and learned else channels
        conditioning = {} if class_labels is None else {"class_labels": class_labels}  # unconditional UNets take none
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )
        for i, t in enumerate(self.progress_bar(chain)):
            model_input = self.scheduler.scale_model_input(image, t)
            model_output = self.unet(model_input, t, **conditioning).sample[:, :output_channels]
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
        if not return_dict:
            return outputs
        labels = None if class_labels is None else class_labels.cpu()
        return DDPMPosteriorPipelineOutput(*outputs, class_labels=labels)

    def _postprocess(self, image: torch.Tensor, output_type: str):
        """[-1, 1] model space to [0, 1] images, as DDPMPipeline does."""
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return image
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(image) if output_type == "pil" else image

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
        class_labels: list[int] | torch.Tensor | None = None,
    ) -> BitsPerDimOutput:
        """
        The variational bound -log p(x_0) <= L_T + sum_t L_{t-1} + L_0 of each image in bits/dim, each term at one
        x_t ~ q(x_t | x_0).

        Args:
            images (`torch.Tensor`, `np.ndarray` or `list[PIL.Image.Image]`): [N x C x H x W] in [-1, 1], uint8
                [N x H x W (x C)], or PIL images.
            generator (`torch.Generator`, *optional*): draws the noise of q(x_t | x_0) (and the strata's timesteps).
            batch_size (`int`, defaults to 256): (image, timestep) pairs per UNet call.
            num_timesteps (`int`, *optional*): the decoder term and `num_timesteps - 1` KL terms, one drawn per image
                in each stratum of the timesteps, weighted by its size: an unbiased estimate. All T terms when `None`.
            clip_denoised (`bool`, defaults to `True`): clip the x_0 prediction to [-1, 1], as Improved DDPM does.
            show_progress (`bool`, defaults to `True`): show a progress bar.
            num_inference_steps (`int`, *optional*): the bound of the respaced chain that sampling with this many
                steps runs. Exclusive with `num_timesteps`.
            class_labels (`list[int]` or `torch.Tensor`, *optional*): the images' classes (class-conditional UNets).
        """
        scheduler = self.scheduler
        if not hasattr(scheduler, "vb_terms_bpd"):
            raise TypeError(f"bits_per_dim needs a DDPMPosteriorScheduler, not a {type(scheduler).__name__}.")
        x_start = self._to_model_space(images)
        num_images = x_start.shape[0]
        class_labels = self._check_class_labels(class_labels, num_images)
        if class_labels is None and self.unet.config.get("num_class_embeds") is not None:
            raise ValueError("`class_labels`, the images' classes, are needed by this class-conditional UNet.")
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

        # each UNet call: `batch_size` (image, timestep) pairs, as many images as fit and their timesteps in turn
        images_per_call = min(batch_size, num_images)
        timesteps_per_call = max(1, batch_size // images_per_call)
        calls = [
            (start, first)
            for start in range(0, num_images, images_per_call)
            for first in range(0, timesteps.shape[1], timesteps_per_call)
        ]
        vb = torch.zeros(num_images, timesteps.shape[1], dtype=torch.float64)
        for start, first in self.progress_bar(calls) if show_progress else calls:
            x0 = x_start[start : start + images_per_call]
            labels = None if class_labels is None else class_labels[start : start + images_per_call]
            chunk = timesteps[start : start + x0.shape[0], first : first + timesteps_per_call]
            terms = self._vb_terms(x0, labels, chunk.to(device), generator, clip_denoised, respaced)
            vb[start : start + x0.shape[0], first : first + chunk.shape[1]] = terms.double().cpu()
        prior = scheduler.prior_bpd(x_start.float(), respaced=respaced).double().cpu()
        weights = torch.as_tensor(weights, dtype=torch.float64)
        bpd = prior + (vb * weights).sum(dim=1)
        standard_error = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
        return BitsPerDimOutput(bpd, prior, vb, timesteps.clone(), weights, standard_error)

    def _vb_terms(self, x0, class_labels, timesteps: torch.Tensor, generator, clip_denoised, respaced) -> torch.Tensor:
        """The bound's terms of images `x0` [n x ...] at their timesteps [n x k]: [n x k] bits/dim."""
        n, k = timesteps.shape
        x_start = x0.repeat(k, *([1] * (x0.ndim - 1)))  # column by column: x0 k times
        conditioning = {} if class_labels is None else {"class_labels": class_labels.repeat(k)}
        t = timesteps.T.reshape(-1)
        noise = randn_tensor(x_start.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.scheduler.add_noise(x_start, noise, t)
        model_output = self.unet(x_t, t, **conditioning).sample
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
            array = np.asarray(images)  # PIL images too
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

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """
        `DiffusionPipeline.save_pretrained` (safetensors only) plus the modules `trust_remote_code=True` loads, staged
        in `save_directory` and moved into place file by file (model_index.json last), each replaced file set aside:
        a failed save leaves the folder as it was. The folder's other files stay; the same variant's stale weights go.
        With `push_to_hub`, the files this save wrote (never the folder's others) and a model card go up in one
        commit (`repo_id`, default the folder's name, `private`, `token`, `commit_message`, `create_pr`), refused
        before anything is sent when they hold the token passed or this machine's.
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
        """Copy this module and our components' into `folder`, named in model_index.json as diffusers resolves them."""
        index_path = os.path.join(folder, "model_index.json")
        with open(index_path) as f:
            index = json.load(f)
        source = inspect.getsourcefile(type(self))
        shutil.copyfile(source, os.path.join(folder, os.path.basename(source)))
        index["_class_name"] = [Path(source).stem, PIPELINE_CLASS]
        for name in ("unet", "scheduler"):
            component_class = type(getattr(self, name))
            path = REMOTE_CODE.get(component_class.__name__)
            if path:
                shutil.copyfile(inspect.getsourcefile(component_class), os.path.join(folder, path))
                index[name] = [Path(path).stem, component_class.__name__]
        with open(index_path, "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "DDPMPosteriorPipeline":
        r"""
        Load a pipeline of hf_ddpm or diffusers' `DDPMPipeline` (google/ddpm-*'s flat layout too) from a folder or a
        Hub repo id, running no code from it: the components' own `from_pretrained` read configs and safetensors
        (a `DDPMScheduler` config as ours), with diffusers' loading arguments (`torch_dtype`, `variant`, `revision`,
        `device_map`...); `unet`, `scheduler` or `timestep_scale` replace the saved ones. With
        `trust_remote_code=True`, this is `DiffusionPipeline.from_pretrained`, which runs the folder's modules.
        """
        if kwargs.get("trust_remote_code"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        kwargs.pop("trust_remote_code", None)
        if kwargs.pop("use_safetensors", True) is False:
            raise ValueError("hf_ddpm loads safetensors weights only, never a pickle: `use_safetensors` must be True.")
        unet, scheduler = kwargs.pop("unet", None), kwargs.pop("scheduler", None)
        timestep_scale = kwargs.pop("timestep_scale", None)
        name = os.fspath(pretrained_model_name_or_path)
        # a name that can only be a path: a missing folder, rather than a failed download
        if not os.path.isdir(name) and (
            name.count("/") != 1 or name.startswith((".", "/", "~")) or os.path.isdir(name.split("/")[0])
        ):
            raise FileNotFoundError(f"No such folder: {name} (expected a folder holding a saved pipeline).")
        index = cls.load_config(name, **kwargs)
        scheduler_class = _scheduler_class(index, name)
        try:
            config, subfolder = UNet2DModel.load_config(name, subfolder="unet", **kwargs), "unet"
        except OSError as error:  # the flat layout of google/ddpm-*: every file at the root
            try:
                config, subfolder = UNet2DModel.load_config(name, **kwargs), None
            except OSError:
                raise error from None
        if unet is None:
            unet = _load_unet(name, index, config, subfolder, kwargs)
        if scheduler is None:
            scheduler = scheduler_class.from_pretrained(name, subfolder=subfolder and "scheduler", **kwargs)
        if timestep_scale is None:
            timestep_scale = index.get("timestep_scale")
        pipeline = cls(unet=unet, scheduler=scheduler, timestep_scale=timestep_scale)
        pipeline.register_to_config(_name_or_path=name)
        return pipeline


def _bound_timesteps(
    num_train_timesteps: int, num_timesteps: int | None, num_images: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[float]]:
    """
    Each image's evaluated timesteps [N x T'] and each term's weight: all T, or the decoder and one timestep per image
    drawn in each of `num_timesteps` - 1 strata (independent draws: unbiased, with an honest standard error).
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
    Edges 1 = e_0 < ... < e_S = T of S strata [e_i, e_{i+1}) of the KL timesteps, spaced geometrically (the first
    ones single timesteps, where the terms are large and change fast), each at least one timestep wide.
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
    """The UNet (`UNet2DModel`, or our `ADMUNet2DModel`), with diffusers' loader, after a bound on its size."""
    where = os.path.join(name, subfolder or "")
    if index.get("unet") == ["diffusers", "UNet2DModel"]:
        unet_class = UNet2DModel
    elif index.get("unet") == ["unet_2d_adm", "ADMUNet2DModel"]:
        from . import unet_2d_adm  # relatively, as the scheduler module

        unet_class = unet_2d_adm.ADMUNet2DModel
    else:
        raise ValueError(f"model_index.json of {name} declares `unet` {index.get('unet')!r}, not UNet2DModel.")
    for key, bound in (("block_out_channels", MAX_UNET_BLOCKS), ("layers_per_block", MAX_LAYERS_PER_BLOCK)):
        value = config.get(key, [] if key == "block_out_channels" else 1)
        size = len(value) if isinstance(value, list) else value
        if type(size) is not int or size > bound:
            what = "a list of at most" if key == "block_out_channels" else "an int, at most"
            raise ValueError(f"{where}/config.json: `{key}` must be {what} {bound}, got {value!r:.100}.")
    try:
        return unet_class.from_pretrained(name, subfolder=subfolder, use_safetensors=True, **kwargs)
    except (ValueError, TypeError, RuntimeError) as error:  # a config it cannot build, weights of other shapes...
        raise ValueError(f"Could not load the UNet from {where}: {error}") from error


def _files_under(folder: str) -> list[str]:
    """The files under `folder`, as relative POSIX paths, model_index.json last (it makes a folder a pipeline)."""
    paths = sorted(path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.is_file())
    return sorted(paths, key=lambda path: path == "model_index.json")


def _stale_files(paths: list[str], written, variant: str | None) -> list[str]:
    """Of a folder's or repo's `paths`, the same variant's weights and our modules that the save `written` replaces."""
    suffix = re.escape(f".{variant}") if variant else ""
    stale = re.compile(
        rf"unet/diffusion_pytorch_model{suffix}(-\d{{5}}-of-\d{{5}})?\.(safetensors|bin)"
        rf"|unet/diffusion_pytorch_model\.(safetensors|bin)\.index{suffix}\.json"
        rf"|{'|'.join(map(re.escape, REMOTE_CODE.values()))}"
    )
    return [path for path in paths if stale.fullmatch(path) and path not in written]


def _move_into(staging: str, target: str, written: list[str], stale: list[str]) -> None:
    """Move `staging`/new's files into `target`, `stale` out, each replaced one set aside; all back on failure."""
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
    """Upload `contents` (path -> bytes) and a card in one commit, unless they hold the given or the local token."""
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
