# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
What each tab of the Space shows, as plain functions of a loaded `SpaceModel` and the tab's inputs: `generate`,
`reverse_trajectory`, `forward_process` and `likelihood` (the last two on a built-in digit or a decoded upload).

Each checks its inputs and raises `InputError` naming the input and what it allows. The events pass the raw values
(preprocess=False): gradio's own checks (`gr.Slider`'s bounds, `gr.Radio`'s choices) do not name the input, do not
check that a number is whole, and let a string or NaN through to a TypeError.
"""

import functools
import math

import gradio as gr
import numpy as np
import PIL.Image
import torch
from diffusers import SchedulerMixin
from gradio.processing_utils import save_bytes_to_cache
from gradio.utils import get_upload_folder
from matplotlib.figure import Figure  # no pyplot: its global state is not thread-safe

from images import figure_to_image, gif_bytes, make_grid, to_model_space, to_uint8
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


class InputError(gr.Error):
    """A request outside the Space's limits: gradio shows its message in the page, without a traceback."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)

    def __str__(self) -> str:
        return self.message


def check_int(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high], or an `InputError` naming the input and its range."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    # a whole float (12.0) is accepted; float(value) of an int as large as 10**400 would raise OverflowError
    if not (is_int or isinstance(value, (float, np.floating)) and float(value).is_integer()):
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
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height), PIL.Image.Resampling.BOX)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def digit_image(model: SpaceModel, index) -> np.ndarray:
    """Digit number `index` of the built-in dataset at the model's size: uint8 [H x W x C]."""
    digits = digits_dataset()
    index = check_int("Digit index", index, 0, len(digits) - 1)
    return fit_to_model(PIL.Image.fromarray(digits[index]), model)


def load_upload(path: str, model: SpaceModel) -> np.ndarray:
    """
    An uploaded image file (at most `MAX_UPLOAD_BYTES`: gradio's `max_file_size`) at the model's size, uint8
    [H x W x C]; `InputError` for anything that is not a still image in one of `UPLOAD_MODES`.
    """
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


def _sample(model: SpaceModel, seed, num_images, max_images: int, num_steps, variance_type, progress, num_frames=None):
    """
    Check the sampling inputs, then run the model's own pipeline for one request (a scheduler of its own, a seeded
    generator), calling `progress` (a `gr.Progress`) after each step; with `num_frames`, record the trajectory at
    that many evenly spaced steps.
    """
    seed = check_seed(seed)
    num_images = check_int("Number of images", num_images, 1, max_images)
    num_steps = check_int("Denoising steps", num_steps, model.min_steps, model.num_train_timesteps)
    variance_type = check_choice("Variance", variance_type, model.variance_types)
    trajectory = {}
    if num_frames is not None:
        num_frames = check_int("Frames", num_frames, MIN_FRAMES, min(MAX_FRAMES, num_steps))
        trajectory = {"return_trajectory": True, "trajectory_frames": num_frames}

    def on_step_end(pipeline, i, t, callback_kwargs):
        progress((i + 1, num_steps), desc="Denoising", unit="steps")
        return {}

    return model.pipeline(variance_type)(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_steps,
        output_type="pt",
        callback_on_step_end=on_step_end,
        **trajectory,
    )


def generate(model: SpaceModel, seed, num_images, num_steps, variance_type, progress=gr.Progress()) -> PIL.Image.Image:
    """
    Draw `num_images` samples by ancestral sampling over `num_steps` respaced steps; the same seed gives the same
    images. Returns them as a grid, upscaled by nearest neighbour.
    """
    output = _sample(model, seed, num_images, MAX_IMAGES, num_steps, variance_type, progress)
    return make_grid(to_uint8(output.images * 2 - 1))  # images: [N x C x H x W] in [0, 1]


def reverse_trajectory(
    model: SpaceModel, seed, num_images, num_steps, variance_type, num_frames, progress=gr.Progress()
) -> tuple[PIL.Image.Image, str, str]:
    """
    Sample as `generate` does, recording x_t and the predicted x_0 at `num_frames` evenly spaced steps.

    Returns:
        The strip (per sample a row of x_t and below it a row of the predicted x_0; a column a frame), the path of the
        looping GIF (per sample x_t beside the predicted x_0) in gradio's cache, whose `delete_cache` sweep removes it,
        and the timestep t of each frame as a caption.
    """
    output = _sample(model, seed, num_images, MAX_TRAJECTORY_IMAGES, num_steps, variance_type, progress, num_frames)
    x_t = np.stack([to_uint8(frame) for frame in output.trajectory], axis=1)  # [N x F x H x W x C]
    x_0 = np.stack([to_uint8(frame) for frame in output.pred_original_trajectory], axis=1)
    pairs = np.stack([x_t, x_0], axis=1)  # [N x 2 x F x H x W x C]: per sample its x_t row, then its x_0 row
    frames = [make_grid(pairs[:, :, f].reshape(-1, *x_t.shape[2:]), num_columns=2) for f in range(x_t.shape[1])]
    strip = make_grid(pairs.reshape(-1, *x_t.shape[2:]), num_columns=x_t.shape[1])
    gif = save_bytes_to_cache(gif_bytes(frames), "trajectory.gif", get_upload_folder())
    timesteps = ", ".join(map(str, output.trajectory_timesteps))
    return strip, gif, f"Frames at t = {timesteps} (left to right; the GIF plays them in order)."


def schedule_choices(model: SpaceModel) -> tuple[str, ...]:
    """Linear and cosine, and the model's own schedule when it is another one."""
    return tuple(dict.fromkeys(["linear", "squaredcos_cap_v2", model.scheduler_config["beta_schedule"]]))


def schedule_curves(scheduler: SchedulerMixin) -> dict[str, np.ndarray]:
    """alpha-bar_t, beta_t and the posterior variance beta-tilde_t of the training chain, each [T], as float64."""
    alpha_bar = scheduler.alphas_cumprod.double().numpy()
    beta = scheduler.betas.double().numpy()
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    return {"alpha_bar": alpha_bar, "beta": beta, "beta_tilde": beta * (1 - alpha_bar_prev) / (1 - alpha_bar)}  # eq. 7


def schedule_plot(scheduler: SchedulerMixin, t: int) -> PIL.Image.Image:
    """alpha-bar_t on a linear axis, beta_t and beta-tilde_t on a log axis, with a line at t."""
    curves = schedule_curves(scheduler)
    schedule, num_train_timesteps = scheduler.config.beta_schedule, scheduler.config.num_train_timesteps
    figure = Figure(figsize=(6.4, 3.4))
    left = figure.subplots()
    steps = np.arange(num_train_timesteps)
    left.plot(steps, curves["alpha_bar"], color="tab:blue", label=r"$\bar\alpha_t$")
    title = f"{SCHEDULE_LABELS.get(schedule, schedule)} schedule, T = {num_train_timesteps}"
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


def forward_process(model: SpaceModel, digit_index, upload, t, beta_schedule: str, seed):
    """
    The forward tab: the image x_0 (the upload, else the digit) beside a draw of x_t ~ q(x_t | x_0) (the scheduler's
    `add_noise`, clipped to [-1, 1] for display) under `beta_schedule`, the plot of the schedule with t marked, and
    x_t's formula as a caption.
    """
    image = source_image(model, digit_index, upload)
    t = check_int("Timestep t", t, 0, model.num_train_timesteps - 1)
    scheduler = model.scheduler(beta_schedule=check_choice("Schedule", beta_schedule, schedule_choices(model)))
    x_0 = to_model_space(image)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(check_seed(seed)))
    x_t = to_uint8(scheduler.add_noise(x_0, noise, torch.tensor([t])))[0]
    alpha_bar = float(scheduler.alphas_cumprod[t])
    caption = (
        f"t = {t}: x_t = {math.sqrt(alpha_bar):.4f} x_0 + {math.sqrt(1 - alpha_bar):.4f} eps,"
        f" signal-to-noise ratio alpha-bar_t / (1 - alpha-bar_t) = {alpha_bar / max(1 - alpha_bar, 1e-300):.4g}"
    )
    return make_grid(np.stack([image, x_t]), num_columns=2), schedule_plot(scheduler, t), caption


def likelihood(model: SpaceModel, digit_index, upload, num_timesteps, num_draws, seed, progress=gr.Progress()):
    """
    The likelihood tab: the bound -log p(x_0) <= L_T + sum_t L_{t-1} + L_0 of the image (the upload, else the digit)
    in bits/dim, under the model's own variances: the KL terms at `num_timesteps` stratified timesteps (the pipeline's
    estimate), repeated for `num_draws` independent draws of the timesteps and of x_t, whose spread gives the
    standard error.

    Returns:
        The image at the model's size, the plot of the terms against t, the bound (mean of the draws), its standard
        error.
    """
    image = source_image(model, digit_index, upload)
    num_timesteps = check_int("Timesteps", num_timesteps, 2, model.num_train_timesteps)
    num_draws = check_int("Noise draws", num_draws, MIN_DRAWS, MAX_DRAWS)
    generator = torch.Generator().manual_seed(check_seed(seed))
    progress(0.0, desc="Evaluating the variational bound")
    images = np.repeat(image[None], num_draws, axis=0)
    output = model.pipeline().bits_per_dim(
        images, generator=generator, num_timesteps=num_timesteps, show_progress=False
    )
    return make_grid(image[None]), likelihood_plot(output), float(output.bpd.mean()), output.standard_error


def likelihood_plot(output) -> PIL.Image.Image:
    """The terms of the bound (the pipeline's `BitsPerDimOutput`) against t, mean over the draws, and the total."""
    figure = Figure(figsize=(6.4, 3.4))
    axes = figure.subplots()
    terms = output.vb_bpd.mean(dim=0).numpy()  # column 0 is the decoder L_0, the others KL terms L_{t-1}
    mean_timesteps = output.timesteps.double().mean(dim=0).numpy()  # the draws' mean t of each stratum
    axes.semilogy(mean_timesteps[1:], terms[1:], "o-", ms=3, label=r"$L_{t-1}$ (KL) at the evaluated t")
    axes.semilogy([0], terms[:1], "s", color="tab:red", label=r"$L_0$ (decoder)")
    bound = f"{float(output.bpd.mean()):.3f} ± {output.standard_error:.3f} bits/dim"
    axes.set(xlabel="t", ylabel="bits/dim", title=f"{bound} (prior {float(output.prior_bpd.mean()):.2g})")
    axes.legend(fontsize=8)
    return figure_to_image(figure)
