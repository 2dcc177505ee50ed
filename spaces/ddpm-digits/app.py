# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The hf-ddpm demo Space: sample digits, watch the reverse process, noise an image, measure its bits/dim.

Runs locally with `python spaces/ddpm-digits/app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, default
127.0.0.1:7860) and as a Hugging Face Space unchanged. The model is a saved `DDPMPosteriorPipeline`: a folder or Hub
repo id from the environment variable HF_DDPM_SPACE_MODEL, by default the `model` folder beside this file.

The Space needs only the packages in requirements.txt, not hf_ddpm: the saved pipeline carries its own pipeline and
scheduler modules, which diffusers loads with `trust_remote_code=True` (they import only torch, numpy and diffusers).

Each tab is a plain function of a loaded `SpaceModel` (`generate`, `reverse_trajectory`, `forward_process`,
`likelihood`), which validates its own inputs and raises `InputError` naming the input and its allowed values;
`build_demo` wires them to Gradio, where an `InputError` becomes a `gr.Error` shown in the page.
"""

import atexit
import contextlib
import functools
import io
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, SchedulerMixin
from gradio.utils import get_upload_folder as gradio_cache_dir
from matplotlib.figure import Figure  # no pyplot: its global state is not thread-safe
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

APP_DIR = Path(__file__).resolve().parent
PIPELINE_CLASS = "DDPMPosteriorPipeline"  # the class the model's own pipeline_ddpm_posterior.py defines
MODEL_ENV = "HF_DDPM_SPACE_MODEL"
DEFAULT_MODEL_DIR = APP_DIR / "model"

# Server-side limits: every request is checked against them, whatever the widgets allow.
MAX_IMAGES = 64
MAX_TRAJECTORY_IMAGES = 8
MIN_STEPS = 10  # the chain is respaced from T steps down to at most this few
MIN_FRAMES, MAX_FRAMES = 2, 20
MIN_DRAWS, MAX_DRAWS = 2, 16  # noise draws per likelihood estimate; two or more give a standard error
MAX_SEED = 2**32 - 1
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # gradio refuses bigger uploads before writing them (launch's max_file_size)
MAX_UPLOAD_SIDE = 2048
UPLOAD_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
# Decoders an upload may reach; anything else (EPS would run Ghostscript, PDF, ...) is refused before decoding.
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# Gradio keeps uploads and outputs in its cache: every CACHE_SWEEP_S seconds, files older than CACHE_MAX_AGE_S go,
# and an upload request is refused (507) while the cache holds CACHE_MAX_BYTES. The upload route runs outside the
# queue, so these bounds, not the queue, are what keeps a burst of uploads from filling the disk.
CACHE_SWEEP_S = int(os.environ.get("HF_DDPM_SPACE_CACHE_SWEEP_S", "60"))
CACHE_MAX_AGE_S = int(os.environ.get("HF_DDPM_SPACE_CACHE_MAX_AGE_S", "600"))
CACHE_MAX_BYTES = int(os.environ.get("HF_DDPM_SPACE_CACHE_MAX_BYTES", str(256 * 2**20)))
# One upload request (gradio accepts up to 1000 files in one): the image, multipart framing, nothing more.
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
# Two requests run at once (a basic CPU Space has 2 cores); the others wait in line, not sharing memory and cores.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 64

CELL_PIXELS = 64  # each sample is upscaled (nearest neighbour) to about this many pixels a side
GRID_PAD = 2
GRID_PAD_VALUE = 96
GIF_FRAME_MS = 250
GIF_MAX_AGE_S = 600
SCHEDULE_LABELS = {"linear": "linear", "squaredcos_cap_v2": "cosine (squaredcos_cap_v2)"}


class InputError(ValueError):
    """A request outside the Space's limits; the message names the input and what it allows."""


class SpaceModelError(RuntimeError):
    """The Space's model cannot be found or loaded (raised at startup)."""


# ----------------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------------


def check_int(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high], or an `InputError` naming the input and its range."""
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value != int(value):
        raise InputError(f"{name} must be a whole number between {low} and {high}, got {value!r}.")
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {int(value)}.")
    return int(value)


def check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")
    return value


def check_seed(seed) -> int:
    return check_int("Seed", seed, 0, MAX_SEED)


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


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
    unet = pipeline.unet.eval().requires_grad_(False)
    return SpaceModel(
        unet=unet,
        scheduler_config=dict(pipeline.scheduler.config),
        source=source,
        pipeline_class=type(pipeline),
        scheduler_class=type(pipeline.scheduler),
    )


# ----------------------------------------------------------------------------------------------------------------
# Images: model space <-> uint8, grids, GIFs, figures
# ----------------------------------------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N x C x H x W] in [-1, 1] (x_t may overshoot: clipped) to a uint8 [N x H x W x C] array."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def make_grid(images: np.ndarray, num_columns: int | None = None) -> PIL.Image.Image:
    """
    Tile uint8 [N x H x W x C] images row by row, each upscaled by nearest neighbour to about `CELL_PIXELS`.

    Returns:
        `PIL.Image.Image`: mode L (C = 1) or RGB (C = 3).
    """
    num, height, width, channels = images.shape
    num_columns = num_columns or math.ceil(math.sqrt(num))
    num_rows = math.ceil(num / num_columns)
    scale = grid_scale(height, width)
    cell_h, cell_w = height * scale, width * scale
    canvas = np.full(
        (num_rows * (cell_h + GRID_PAD) + GRID_PAD, num_columns * (cell_w + GRID_PAD) + GRID_PAD, channels),
        GRID_PAD_VALUE,
        dtype=np.uint8,
    )
    cells = images.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest neighbour: each pixel a scale^2 block
    for i, cell in enumerate(cells):
        top = GRID_PAD + (i // num_columns) * (cell_h + GRID_PAD)
        left = GRID_PAD + (i % num_columns) * (cell_w + GRID_PAD)
        canvas[top : top + cell_h, left : left + cell_w] = cell
    return PIL.Image.fromarray(canvas[..., 0] if channels == 1 else canvas)


def grid_scale(height: int, width: int) -> int:
    return max(1, CELL_PIXELS // max(height, width))


def save_gif(frames: list[PIL.Image.Image], path: str | os.PathLike) -> None:
    """An endlessly looping GIF; the last frame (the sample) is held longer. Written atomically."""
    path = os.fspath(path)
    partial = f"{path}.{uuid.uuid4().hex}.part"
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_FRAME_MS * 6]
    try:
        frames[0].save(
            partial, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False
        )
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def figure_to_image(figure: Figure) -> PIL.Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")


# ----------------------------------------------------------------------------------------------------------------
# Input images: the built-in digits and uploads, at the model's size
# ----------------------------------------------------------------------------------------------------------------


@functools.cache
def digits_dataset() -> np.ndarray:
    """scikit-learn's 1797 handwritten digits (bundled, no download), as uint8 [N x 8 x 8], white ink on black."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0 * 255.0).round().astype(np.uint8)


def fit_to_model(image: PIL.Image.Image, model: SpaceModel) -> np.ndarray:
    """A PIL image resized (area averaging) and converted to the model's shape: uint8 [H x W x C]."""
    channels, height, width = model.image_shape
    if image.mode in ("LA", "PA", "RGBA", "P"):  # transparent parts become the black background of the digits
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", image.size, (0, 0, 0, 255)), image.convert("RGBA"))
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), PIL.Image.Resampling.BOX)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def digit_image(model: SpaceModel, index) -> np.ndarray:
    """Digit number `index` of the built-in dataset at the model's size: uint8 [H x W x C]."""
    digits = digits_dataset()
    index = check_int("Digit index", index, 0, len(digits) - 1)
    return fit_to_model(PIL.Image.fromarray(digits[index]), model)


def load_upload(path: str | os.PathLike, model: SpaceModel) -> np.ndarray:
    """
    An uploaded image file at the model's size, uint8 [H x W x C]; `InputError` for anything that is not a small
    still image in one of `UPLOAD_MODES`.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"The upload is {size / 2**20:.1f} MB; uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    try:
        # the header only, and only by the decoders listed: sizes and modes are checked before decoding
        with PIL.Image.open(path, formats=UPLOAD_FORMATS) as image:
            width, height = image.size
            if max(width, height) > MAX_UPLOAD_SIDE:
                raise InputError(
                    f"The upload is {width}x{height} pixels; images up to {MAX_UPLOAD_SIDE} pixels a side are accepted"
                )
            if getattr(image, "n_frames", 1) > 1:
                raise InputError("The upload is an animated image; upload a still image.")
            if image.mode not in UPLOAD_MODES:
                raise InputError(
                    f"The upload's colour mode is {image.mode!r}; accepted modes are {', '.join(UPLOAD_MODES)}"
                    " (8-bit grey, palette or RGB, with or without alpha)."
                )
            image.load()
            return fit_to_model(image, model)
    except PIL.Image.DecompressionBombError:  # a header claiming far more pixels than any upload may have
        raise InputError(
            f"The upload is a decompression bomb (its header claims more than {PIL.Image.MAX_IMAGE_PIXELS:,} pixels);"
            f" images up to {MAX_UPLOAD_SIDE} pixels a side are accepted."
        ) from None
    except PIL.UnidentifiedImageError:
        raise InputError("The upload is not an image file that can be read (PNG, JPEG, GIF, BMP or WebP).") from None
    except OSError as error:  # truncated or corrupt data
        raise InputError(f"The upload could not be decoded as an image: {error}.") from None


def source_image(model: SpaceModel, digit_index, upload: str | dict | None) -> np.ndarray:
    """
    The uploaded image when there is one, else the chosen digit: uint8 [H x W x C]. `upload` is a path, or the raw
    gr.File payload (a dict with the path of the upload, already in gradio's cache).
    """
    if isinstance(upload, dict):
        upload = upload.get("path")
    return load_upload(upload, model) if upload else digit_image(model, digit_index)


def to_model_space(image: np.ndarray) -> torch.Tensor:
    """uint8 [H x W x C] to a [1 x C x H x W] float tensor in [-1, 1]."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------------
# Generate
# ----------------------------------------------------------------------------------------------------------------


def _check_sampling(model: SpaceModel, seed, num_images, max_images: int, num_steps, variance_type):
    return (
        check_seed(seed),
        check_int("Number of images", num_images, 1, max_images),
        check_int("Denoising steps", num_steps, model.min_steps, model.num_train_timesteps),
        check_choice("Variance", variance_type, model.variance_types),
    )


def _step_callback(progress: Callable[[int, int], None] | None, num_steps: int):
    """A pipeline `callback_on_step_end` that reports (steps done, total steps) to `progress`."""
    if progress is None:
        return None

    def on_step_end(pipeline, i, t, callback_kwargs):
        progress(i + 1, num_steps)
        return {}

    return on_step_end


def generate(
    model: SpaceModel,
    seed,
    num_images,
    num_steps,
    variance_type: str,
    progress: Callable[[int, int], None] | None = None,
) -> PIL.Image.Image:
    """
    Draw `num_images` samples by ancestral sampling over `num_steps` respaced steps; the same seed gives the same
    images.

    Args:
        progress (`Callable[[int, int], None]`, *optional*): called as `progress(steps_done, num_steps)` each step.

    Returns:
        `PIL.Image.Image`: the samples as a grid, upscaled by nearest neighbour.
    """
    seed, num_images, num_steps, variance_type = _check_sampling(
        model, seed, num_images, MAX_IMAGES, num_steps, variance_type
    )
    samples = model.pipeline(variance_type)(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_steps,
        output_type="pt",
        callback_on_step_end=_step_callback(progress, num_steps),
    ).images  # [N x C x H x W] in [0, 1]
    return make_grid(to_uint8(samples * 2 - 1))


# ----------------------------------------------------------------------------------------------------------------
# Watch the reverse process
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """
    Args:
        strip (`PIL.Image.Image`): per sample a row of x_t and below it a row of the predicted x_0; a column a frame.
        frames (`list[PIL.Image.Image]`): the GIF frames; each holds, per sample, x_t beside the predicted x_0.
        timesteps (`list[int]`): the timestep t of each frame (x_t is the input of that step).
    """

    strip: PIL.Image.Image
    frames: list[PIL.Image.Image]
    timesteps: list[int]


def reverse_trajectory(
    model: SpaceModel,
    seed,
    num_images,
    num_steps,
    variance_type: str,
    num_frames,
    progress: Callable[[int, int], None] | None = None,
) -> Trajectory:
    """Sample as `generate` does, recording x_t and the predicted x_0 at `num_frames` evenly spaced steps."""
    seed, num_images, num_steps, variance_type = _check_sampling(
        model, seed, num_images, MAX_TRAJECTORY_IMAGES, num_steps, variance_type
    )
    num_frames = check_int("Frames", num_frames, MIN_FRAMES, min(MAX_FRAMES, num_steps))
    output = model.pipeline(variance_type)(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_steps,
        output_type="pt",
        callback_on_step_end=_step_callback(progress, num_steps),
        return_trajectory=True,
        trajectory_frames=num_frames,
    )
    x_t = np.stack([to_uint8(frame) for frame in output.trajectory], axis=1)  # [N x F x H x W x C]
    x_0 = np.stack([to_uint8(frame) for frame in output.pred_original_trajectory], axis=1)
    num_recorded = x_t.shape[1]
    rows = np.stack([x_t, x_0], axis=1).reshape(-1, *x_t.shape[2:])  # per sample: its x_t row, then its x_0 row
    frames = [
        make_grid(np.stack([x_t[:, f], x_0[:, f]], axis=1).reshape(-1, *x_t.shape[2:]), num_columns=2)
        for f in range(num_recorded)
    ]
    return Trajectory(make_grid(rows, num_columns=num_recorded), frames, list(output.trajectory_timesteps))


# ----------------------------------------------------------------------------------------------------------------
# Forward process
# ----------------------------------------------------------------------------------------------------------------


def schedule_choices(model: SpaceModel) -> tuple[str, ...]:
    """Linear and cosine, and the model's own schedule when it is another one."""
    own = model.scheduler_config["beta_schedule"]
    return tuple(dict.fromkeys(["linear", "squaredcos_cap_v2", own]))


def schedule_curves(scheduler: SchedulerMixin) -> dict[str, np.ndarray]:
    """
    alpha-bar_t, beta_t and the posterior variance beta-tilde_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)
    (Ho et al. eq. 7) of the training chain, each [T], in float64.
    """
    alpha_bar = scheduler.alphas_cumprod.double().numpy()
    beta = scheduler.betas.double().numpy()
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    return {"alpha_bar": alpha_bar, "beta": beta, "beta_tilde": beta * (1 - alpha_bar_prev) / (1 - alpha_bar)}


def _check_forward(model: SpaceModel, t, beta_schedule) -> tuple[int, str]:
    return (
        check_int("Timestep t", t, 0, model.num_train_timesteps - 1),
        check_choice("Schedule", beta_schedule, schedule_choices(model)),
    )


def schedule_plot(model: SpaceModel, beta_schedule: str, t) -> PIL.Image.Image:
    """alpha-bar_t on a linear axis, beta_t and beta-tilde_t on a log axis, with a line at the chosen t."""
    t, beta_schedule = _check_forward(model, t, beta_schedule)
    curves = schedule_curves(model.scheduler(beta_schedule=beta_schedule))
    title = f"{SCHEDULE_LABELS.get(beta_schedule, beta_schedule)} schedule, T = {model.num_train_timesteps}"
    figure = Figure(figsize=(6.4, 3.4))
    left = figure.subplots()
    steps = np.arange(len(curves["alpha_bar"]))
    left.plot(steps, curves["alpha_bar"], color="tab:blue", label=r"$\bar\alpha_t$")
    left.set(xlabel="t", ylabel=r"$\bar\alpha_t$", ylim=(-0.02, 1.02), title=title)
    right = left.twinx()
    right.semilogy(steps, curves["beta"], color="tab:red", label=r"$\beta_t$")
    right.semilogy(steps[1:], curves["beta_tilde"][1:], color="tab:orange", ls="--", label=r"$\tilde\beta_t$")
    right.set_ylabel(r"$\beta_t$, $\tilde\beta_t$ (log)")
    left.axvline(t, color="black", lw=1)
    left.plot([t], [curves["alpha_bar"][t]], "o", color="black")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="center left", fontsize=8)
    return figure_to_image(figure)


@dataclass
class ForwardSample:
    """
    Args:
        pair (`PIL.Image.Image`): x_0 beside x_t, upscaled.
        x_t (`np.ndarray`): uint8 [H x W x C], the sample of q(x_t | x_0) clipped to [-1, 1] for display.
        alpha_bar (`float`): alpha-bar_t.
    """

    pair: PIL.Image.Image
    x_t: np.ndarray
    alpha_bar: float


def forward_process(model: SpaceModel, image: np.ndarray, t, beta_schedule: str, seed) -> ForwardSample:
    """
    Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I) (Ho et al. eq. 4) for the image x_0 under
    `beta_schedule`, with noise from `seed`.
    """
    t, beta_schedule = _check_forward(model, t, beta_schedule)
    seed = check_seed(seed)
    scheduler = model.scheduler(beta_schedule=beta_schedule)
    x_0 = to_model_space(image)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = to_uint8(scheduler.add_noise(x_0, noise, torch.tensor([t])))[0]
    pair = make_grid(np.stack([image, x_t]), num_columns=2)
    return ForwardSample(pair, x_t, float(scheduler.alphas_cumprod[t]))


# ----------------------------------------------------------------------------------------------------------------
# Likelihood
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Likelihood:
    """
    Args:
        bpd (`float`): the variational bound in bits/dim, averaged over the noise draws.
        standard_error (`float`): its standard error over the draws of x_t ~ q(x_t | x_0).
        output (`BitsPerDimOutput`): the pipeline's output, one row per draw.
    """

    bpd: float
    standard_error: float
    output: object  # the model module's BitsPerDimOutput


def likelihood(model: SpaceModel, image: np.ndarray, num_timesteps, num_draws, seed) -> Likelihood:
    """
    The bound -log p(x_0) <= L_T + sum_t L_{t-1} + L_0 of one image in bits/dim, under the model's own variances:
    the KL terms at `num_timesteps` stratified timesteps (the pipeline's estimate), repeated for `num_draws`
    independent draws of the timesteps and of x_t, whose spread gives the standard error.
    """
    num_timesteps = check_int("Timesteps", num_timesteps, 2, model.num_train_timesteps)
    num_draws = check_int("Noise draws", num_draws, MIN_DRAWS, MAX_DRAWS)
    seed = check_seed(seed)
    output = model.pipeline().bits_per_dim(
        np.repeat(image[None], num_draws, axis=0),
        generator=torch.Generator().manual_seed(seed),
        num_timesteps=num_timesteps,
        show_progress=False,
    )
    return Likelihood(float(output.bpd.mean()), float(output.standard_error), output)


def likelihood_plot(result: Likelihood) -> PIL.Image.Image:
    """The terms of the bound against t (mean over draws), and the total."""
    output = result.output
    figure = Figure(figsize=(6.4, 3.4))
    axes = figure.subplots()
    terms = output.vb_bpd.mean(dim=0).numpy()  # column 0 is the decoder L_0, the others KL terms L_{t-1}
    mean_timesteps = output.timesteps.double().mean(dim=0).numpy()  # the draws' mean t of each stratum
    axes.semilogy(mean_timesteps[1:], terms[1:], "o-", ms=3, label=r"$L_{t-1}$ (KL) at the evaluated t")
    axes.semilogy([0], terms[:1], "s", color="tab:red", label=r"$L_0$ (decoder)")
    axes.set(
        xlabel="t",
        ylabel="bits/dim",
        title=f"{result.bpd:.3f} ± {result.standard_error:.3f} bits/dim (prior {float(output.prior_bpd.mean()):.2g})",
    )
    axes.legend(fontsize=8)
    return figure_to_image(figure)


# ----------------------------------------------------------------------------------------------------------------
# The Gradio app
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def user_errors():
    """Show an `InputError` in the page as a `gr.Error` (the message, no traceback)."""
    try:
        yield
    except InputError as error:
        raise gr.Error(str(error), print_exception=False) from None


def gradio_progress(progress: gr.Progress, desc: str) -> Callable[[int, int], None]:
    return lambda done, total: progress((done, total), desc=desc, unit="steps")


@functools.cache
def _gif_dir() -> str:
    folder = tempfile.mkdtemp(prefix="ddpm-space-gifs-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _new_gif_path() -> str:
    """
    A fresh path for a trajectory GIF. GIFs older than `GIF_MAX_AGE_S` are removed first (gradio serves its own copy
    of each), so a long-running Space does not fill its disk.
    """
    folder = _gif_dir()
    now = time.time()
    for entry in os.scandir(folder):
        if now - entry.stat().st_mtime > GIF_MAX_AGE_S:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)
    return os.path.join(folder, f"trajectory-{uuid.uuid4().hex}.gif")


INTRO = """# DDPM digits
Denoising diffusion (Ho et al. 2020) with the Improved DDPM variances (Nichol & Dhariwal 2021), built on
hf-ddpm's `DDPMPosteriorPipeline`, loaded by diffusers from the model's own code. Model: `{source}`,
{channels}x{height}x{width} images, T = {T} diffusion steps, variances: {variances}.
"""


def build_demo(model: SpaceModel | None = None) -> gr.Blocks:
    """
    The Space's page: four tabs over `model` (loaded from HF_DDPM_SPACE_MODEL when None), with its queue.

    Events run with `preprocess=False`: the raw values reach the tab functions, which check every one of them (gradio's
    own range checks would answer first, with messages that do not name the input).
    """
    model = model or load_space_model()
    channels, height, width = model.image_shape
    num_train_timesteps = model.num_train_timesteps
    intro = INTRO.format(
        source=Path(model.source).name if os.path.isdir(model.source) else model.source,
        channels=channels,
        height=height,
        width=width,
        T=num_train_timesteps,
        variances=", ".join(model.variance_types),
    )
    default_steps = min(100, num_train_timesteps)
    schedules = [(SCHEDULE_LABELS.get(name, name), name) for name in schedule_choices(model)]
    num_digits = len(digits_dataset())

    def sampling_inputs(max_images: int, default_images: int):
        seed = gr.Number(label="Seed", value=0, precision=0, info=f"0 to {MAX_SEED}")
        num_images = gr.Slider(1, max_images, value=default_images, step=1, label="Number of images")
        steps = gr.Slider(
            model.min_steps, num_train_timesteps, value=default_steps, step=1, label="Denoising steps (respaced)"
        )
        variance = gr.Radio(list(model.variance_types), value=model.default_variance_type, label="Variance")
        return [seed, num_images, steps, variance]

    def image_inputs():
        index = gr.Slider(0, num_digits - 1, value=0, step=1, label="Digit (scikit-learn digits dataset)")
        upload = gr.File(label="...or upload an image (used instead)", file_types=["image"], type="filepath")
        return index, upload

    def on_generate(seed, num_images, num_steps, variance_type, progress=gr.Progress()):
        with user_errors():
            return generate(model, seed, num_images, num_steps, variance_type, gradio_progress(progress, "Denoising"))

    def on_trajectory(seed, num_images, num_steps, variance_type, num_frames, progress=gr.Progress()):
        with user_errors():
            result = reverse_trajectory(
                model, seed, num_images, num_steps, variance_type, num_frames, gradio_progress(progress, "Denoising")
            )
            gif_path = _new_gif_path()
            save_gif(result.frames, gif_path)
            timesteps = ", ".join(map(str, result.timesteps))
            return result.strip, gif_path, f"Frames at t = {timesteps} (left to right; the GIF plays them in order)."

    def on_forward(digit_index, upload, t, beta_schedule, seed):
        with user_errors():
            result = forward_process(model, source_image(model, digit_index, upload), t, beta_schedule, seed)
            snr = result.alpha_bar / max(1 - result.alpha_bar, 1e-300)
            text = (
                f"t = {int(t)}: x_t = {math.sqrt(result.alpha_bar):.4f} x_0 + {math.sqrt(1 - result.alpha_bar):.4f}"
                f" eps, signal-to-noise ratio alpha-bar_t / (1 - alpha-bar_t) = {snr:.4g}"
            )
            return result.pair, schedule_plot(model, beta_schedule, t), text

    def on_likelihood(digit_index, upload, num_timesteps, num_draws, seed, progress=gr.Progress()):
        with user_errors():
            image = source_image(model, digit_index, upload)
            progress(0.0, desc="Evaluating the variational bound")
            result = likelihood(model, image, num_timesteps, num_draws, seed)
            return make_grid(image[None]), likelihood_plot(result), result.bpd, result.standard_error

    with gr.Blocks(title="DDPM digits", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown(intro)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    generate_inputs = sampling_inputs(MAX_IMAGES, 16)
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                grid = gr.Image(label="Samples", format="png", interactive=False, elem_id="generate-grid")
            generate_button.click(
                on_generate, generate_inputs, grid, api_name="generate", concurrency_id="model", preprocess=False
            )

        with gr.Tab("Watch the reverse process"):
            with gr.Row():
                with gr.Column():
                    trajectory_inputs = sampling_inputs(MAX_TRAJECTORY_IMAGES, 4)
                    frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=10, step=1, label="Frames")
                    trajectory_button = gr.Button("Run the reverse process", variant="primary")
                with gr.Column():
                    strip = gr.Image(label="x_t (upper row) and predicted x_0 (lower row), per sample", format="png")
                    animation = gr.Image(label="Animation: x_t | predicted x_0", type="filepath")
                    frame_times = gr.Markdown()
            trajectory_button.click(
                on_trajectory,
                [*trajectory_inputs, frames],
                [strip, animation, frame_times],
                api_name="trajectory",
                concurrency_id="model",
                preprocess=False,
            )

        with gr.Tab("Forward process"):
            with gr.Row():
                with gr.Column():
                    forward_index, forward_upload = image_inputs()
                    t = gr.Slider(
                        0, num_train_timesteps - 1, value=num_train_timesteps // 2, step=1, label="Timestep t"
                    )
                    schedule = gr.Radio(
                        schedules, value=model.scheduler_config["beta_schedule"], label="Noise schedule"
                    )
                    forward_seed = gr.Number(label="Seed", value=0, precision=0)
                    forward_button = gr.Button("Sample x_t ~ q(x_t | x_0)", variant="primary")
                with gr.Column():
                    pair = gr.Image(label="x_0 | x_t", format="png")
                    plot = gr.Image(label="Noise schedule", format="png")
                    forward_text = gr.Markdown()
            gr.on(
                [forward_button.click, t.release],
                on_forward,
                [forward_index, forward_upload, t, schedule, forward_seed],
                [pair, plot, forward_text],
                api_name="forward",
                concurrency_id="model",
                preprocess=False,
            )

        with gr.Tab("Likelihood"):
            with gr.Row():
                with gr.Column():
                    likelihood_index, likelihood_upload = image_inputs()
                    num_timesteps = gr.Slider(
                        2, num_train_timesteps, value=min(50, num_train_timesteps), step=1, label="Timesteps evaluated"
                    )
                    num_draws = gr.Slider(MIN_DRAWS, MAX_DRAWS, value=4, step=1, label="Noise draws")
                    likelihood_seed = gr.Number(label="Seed", value=0, precision=0)
                    likelihood_button = gr.Button("Compute bits/dim", variant="primary")
                with gr.Column():
                    evaluated = gr.Image(label="Evaluated image (at the model's size)", format="png")
                    terms = gr.Image(label="Terms of the bound", format="png")
                    with gr.Row():
                        bpd = gr.Number(label="Bits/dim (upper bound on -log2 p(x) per dimension)")
                        standard_error = gr.Number(label="Standard error")
            likelihood_button.click(
                on_likelihood,
                [likelihood_index, likelihood_upload, num_timesteps, num_draws, likelihood_seed],
                [evaluated, terms, bpd, standard_error],
                api_name="likelihood",
                concurrency_id="model",
                preprocess=False,
            )
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)


class UploadQuota:
    """
    ASGI middleware bounding gradio's upload route: a request larger than `MAX_UPLOAD_REQUEST_BYTES` (or without a
    Content-Length) gets 413/411, and an upload that would bring gradio's cache folder, plus the uploads still in
    flight, over `CACHE_MAX_BYTES` gets 507, before any byte of it is read. The cache empties as `delete_cache`
    removes files older than `CACHE_MAX_AGE_S`.
    """

    def __init__(self, app, cache_dir: str):
        self.app, self.cache_dir = app, cache_dir
        self.in_flight = 0  # bytes admitted but maybe not yet on disk; one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        is_upload = scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload")
        if not is_upload:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        refusal = self.refusal(length)
        if refusal is not None:
            status, message = refusal
            response = PlainTextResponse(message, status_code=status, headers={"Connection": "close"})
            return await response(scope, receive, send)
        self.in_flight += int(length)  # checked and reserved with no await in between
        try:
            await self.app(scope, receive, send)  # returns after gradio's background move into the cache
        finally:
            self.in_flight -= int(length)

    def refusal(self, content_length: bytes) -> tuple[int, str] | None:
        if not content_length.isdigit():
            return 411, "Uploads must declare their size (Content-Length)."
        if int(content_length) > MAX_UPLOAD_REQUEST_BYTES:
            return 413, f"Uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB."
        if folder_bytes(self.cache_dir) + self.in_flight + int(content_length) > CACHE_MAX_BYTES:
            return 507, "The Space's upload space is full; try again in a few minutes."
        return None


def folder_bytes(folder: str) -> int:
    """The bytes of every file below `folder` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile by the cache sweep
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def torch_threads() -> int:
    """Cores shared by the requests that may run at once, at least one each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // CONCURRENCY_LIMIT)


def main() -> None:
    try:
        model = load_space_model()
    except SpaceModelError as error:
        sys.exit(f"ddpm-digits Space: {error}")  # one line on stderr, exit status 1
    torch.set_num_threads(torch_threads())
    build_demo(model).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_UPLOAD_BYTES,
        app_kwargs={"middleware": [Middleware(UploadQuota, cache_dir=gradio_cache_dir())]},
    )


if __name__ == "__main__":
    main()
