# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
What each tab of the Space computes, as plain functions of a loaded `SpaceModel`: `generate`, `reverse_trajectory`,
`forward_process` (with `schedule_plot`), `likelihood` (with `likelihood_plot`), and the input image of the last two
(`source_image`: a built-in digit or a decoded upload).

Every function validates its own inputs, whatever the widgets allow, and raises `InputError` naming the input and its
allowed values. The sampling, the trajectory, the noising and the bound are the model's own pipeline and scheduler.
"""

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import SchedulerMixin
from matplotlib.figure import Figure

from images import figure_to_image, make_grid, to_model_space, to_uint8
from space_model import SpaceModel

# Server-side limits: every request is checked against them, whatever the widgets allow.
MAX_IMAGES = 64
MAX_TRAJECTORY_IMAGES = 8
MIN_FRAMES, MAX_FRAMES = 2, 20
MIN_DRAWS, MAX_DRAWS = 2, 16  # noise draws per likelihood estimate; two or more give a standard error
MAX_SEED = 2**32 - 1
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # gradio refuses bigger uploads before writing them (launch's max_file_size)
MAX_UPLOAD_SIDE = 2048
UPLOAD_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
# Decoders an upload may reach; anything else (EPS would run Ghostscript, PDF, ...) is refused before decoding.
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
SCHEDULE_LABELS = {"linear": "linear", "squaredcos_cap_v2": "cosine (squaredcos_cap_v2)"}


class InputError(ValueError):
    """A request outside the Space's limits; the message names the input and what it allows."""


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


def _sample(model: SpaceModel, seed: int, num_images: int, num_steps: int, variance_type: str, progress, **options):
    """
    The model's own pipeline for one request (a scheduler of its own, a seeded generator), calling
    `progress(steps_done, num_steps)` after each step when given; `options` go to the pipeline as they are.
    """

    def on_step_end(pipeline, i, t, callback_kwargs):
        progress(i + 1, num_steps)
        return {}

    return model.pipeline(variance_type)(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_steps,
        output_type="pt",
        callback_on_step_end=on_step_end if progress is not None else None,
        **options,
    )


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
    samples = _sample(model, seed, num_images, num_steps, variance_type, progress).images  # [N x C x H x W] in [0, 1]
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

    @property
    def caption(self) -> str:
        return f"Frames at t = {', '.join(map(str, self.timesteps))} (left to right; the GIF plays them in order)."


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
    trajectory = {"return_trajectory": True, "trajectory_frames": num_frames}
    output = _sample(model, seed, num_images, num_steps, variance_type, progress, **trajectory)
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
    """alpha-bar_t, beta_t and the posterior variance beta-tilde_t of the training chain, each [T], as float64."""
    timesteps = torch.arange(scheduler.config.num_train_timesteps)
    anything = torch.zeros(len(timesteps), dtype=torch.float64)  # the variance does not depend on x_0 or x_t
    _, beta_tilde, _ = scheduler.q_posterior_mean_variance(anything, anything, timesteps)  # Ho et al. eq. 7
    return {
        "alpha_bar": scheduler.alphas_cumprod.double().numpy(),
        "beta": scheduler.betas.double().numpy(),
        "beta_tilde": beta_tilde.numpy(),
    }


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
        t (`int`): the timestep.
        alpha_bar (`float`): alpha-bar_t.
    """

    pair: PIL.Image.Image
    x_t: np.ndarray
    t: int
    alpha_bar: float

    @property
    def caption(self) -> str:
        snr = self.alpha_bar / max(1 - self.alpha_bar, 1e-300)
        return (
            f"t = {self.t}: x_t = {math.sqrt(self.alpha_bar):.4f} x_0 + {math.sqrt(1 - self.alpha_bar):.4f}"
            f" eps, signal-to-noise ratio alpha-bar_t / (1 - alpha-bar_t) = {snr:.4g}"
        )


def forward_process(model: SpaceModel, image: np.ndarray, t, beta_schedule: str, seed) -> ForwardSample:
    """
    Draw x_t ~ q(x_t | x_0) (the scheduler's `add_noise`) for the image x_0 under `beta_schedule`, with noise from
    `seed`.
    """
    t, beta_schedule = _check_forward(model, t, beta_schedule)
    seed = check_seed(seed)
    scheduler = model.scheduler(beta_schedule=beta_schedule)
    x_0 = to_model_space(image)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = to_uint8(scheduler.add_noise(x_0, noise, torch.tensor([t])))[0]
    pair = make_grid(np.stack([image, x_t]), num_columns=2)
    return ForwardSample(pair, x_t, t, float(scheduler.alphas_cumprod[t]))


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
