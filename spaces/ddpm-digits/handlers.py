# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Space's tabs: functions of a `SpaceModel` and the tab's raw inputs (preprocess=False: gradio's checks name no
input and let a string or NaN through), each raising an `InputError` that names the input and what it allows."""

import functools
import io
import math

import gradio as gr
import numpy as np
import PIL.Image
import torch
from diffusers import SchedulerMixin
from gradio.processing_utils import save_bytes_to_cache
from gradio.utils import get_upload_folder
from matplotlib.figure import Figure  # no pyplot: its global state is not thread-safe

from space_model import SpaceModel

# Server-side limits: every request is checked against them, whatever the widgets allow.
MAX_IMAGES = 64
MAX_TRAJECTORY_IMAGES = 8
MIN_FRAMES, MAX_FRAMES = 2, 20
MIN_DRAWS, MAX_DRAWS = 2, 16  # noise draws per likelihood estimate; two or more give a standard error
MAX_SEED = 2**32 - 1
MAX_UPLOAD_SIDE = 2048
UPLOAD_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
# Decoders an upload may reach; anything else (EPS would run Ghostscript, PDF, ...) is refused before decoding.
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
SCHEDULE_LABELS = {"linear": "linear", "squaredcos_cap_v2": "cosine (squaredcos_cap_v2)"}
CELL_PIXELS = 64  # each sample is upscaled (nearest neighbour) to about this many pixels a side
GRID_PAD, GRID_PAD_VALUE = 2, 96
GIF_FRAME_MS = 250


class InputError(gr.Error):
    """A request outside the Space's limits: gradio shows its message in the page, without a traceback."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)

    def __str__(self) -> str:  # gr.Error's is the message's repr
        return self.message


def check_int(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high], or an `InputError` naming the input and its range."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    # a whole float (12.0) is accepted; float(value) of an int as large as 10**400 would raise OverflowError
    if not (is_int or isinstance(value, (float, np.floating)) and float(value).is_integer()):
        raise InputError(f"{name} must be a whole number between {low} and {high}, got {value!r:.40}.")
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {int(value)}.")
    return int(value)


def check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")
    return value


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


def source_image(model: SpaceModel, digit_index, upload: str | dict | None) -> np.ndarray:
    """
    The upload (a path, or gr.File's raw payload) when there is one, else the digit, at the model's size: uint8
    [H x W x C]. `InputError` for an upload that is not a still image in one of `UPLOAD_MODES`.
    """
    upload = upload.get("path") if isinstance(upload, dict) else upload
    if not upload:
        digits = digits_dataset()
        return fit_to_model(
            PIL.Image.fromarray(digits[check_int("Digit index", digit_index, 0, len(digits) - 1)]), model
        )
    try:
        # the header only, and only by the decoders listed: sizes and modes are checked before decoding
        with PIL.Image.open(upload, formats=UPLOAD_FORMATS) as image:
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


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N x C x H x W] in [-1, 1] (x_t may overshoot: clipped) to a uint8 [N x H x W x C] array."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def make_grid(images: np.ndarray, num_columns: int | None = None) -> PIL.Image.Image:
    """uint8 [N x H x W x C] images tiled row by row, each upscaled to about `CELL_PIXELS`, bordered by `GRID_PAD`."""
    num, height, width, channels = images.shape
    num_columns = num_columns or math.ceil(math.sqrt(num))
    scale = max(1, CELL_PIXELS // max(height, width))
    cell_width, cell_height = width * scale + GRID_PAD, height * scale + GRID_PAD  # a cell and its border
    size = (num_columns * cell_width + GRID_PAD, math.ceil(num / num_columns) * cell_height + GRID_PAD)
    grid = PIL.Image.new("L" if channels == 1 else "RGB", size, (GRID_PAD_VALUE,) * channels)
    for i, image in enumerate(images[..., 0] if channels == 1 else images):
        cell = PIL.Image.fromarray(image).resize((width * scale, height * scale), PIL.Image.Resampling.NEAREST)
        grid.paste(cell, (GRID_PAD + i % num_columns * cell_width, GRID_PAD + i // num_columns * cell_height))
    return grid


def figure_to_image(figure: Figure) -> PIL.Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return PIL.Image.open(buffer).convert("RGB")


def check_class_labels(model: SpaceModel, text, num_images: int) -> list[int] | None:
    """The comma- or space-separated class labels, taken in turn over the images; `None` (random classes) if empty."""
    words = str(text or "").replace(",", " ").split()
    if not words:
        return None
    if model.num_classes is None:
        raise InputError("Class labels apply to a class-conditional model; this one is unconditional.")
    # a word int() reads as a short decimal number ("²".isdigit() too, and 5,000 digits exceed int()'s limit)
    number = [int(word) if word.lstrip("+-").isdecimal() and len(word) < 20 else word for word in words]
    labels = [check_int("Class label", word, 0, model.num_classes - 1) for word in number]
    return [labels[i % len(labels)] for i in range(num_images)]


def _sample(
    model: SpaceModel, seed, num_images, max_images, num_steps, variance_type, progress, frames=None, labels=""
):
    """Check the inputs, then sample with a pipeline of the request's own, reporting each step to `progress`."""
    seed = check_int("Seed", seed, 0, MAX_SEED)
    num_images = check_int("Number of images", num_images, 1, max_images)
    class_labels = check_class_labels(model, labels, num_images)
    num_steps = check_int("Denoising steps", num_steps, model.min_steps, model.num_train_timesteps)
    variance_type = check_choice("Variance", variance_type, model.variance_types)
    if frames is not None:
        frames = check_int("Frames", frames, MIN_FRAMES, min(MAX_FRAMES, num_steps))

    def on_step_end(pipeline, i, t, callback_kwargs):
        progress((i + 1, num_steps), desc="Denoising", unit="steps")
        return {}

    return model.pipeline(variance_type)(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_steps,
        output_type="pt",
        callback_on_step_end=on_step_end,
        return_trajectory=frames is not None,
        trajectory_frames=frames,
        class_labels=class_labels,
    )


def generate(
    model: SpaceModel, seed, num_images, num_steps, variance_type, progress=gr.Progress(), class_labels=""
) -> PIL.Image.Image:
    """A grid of `num_images` samples drawn over `num_steps` respaced steps; the same seed, the same images."""
    output = _sample(model, seed, num_images, MAX_IMAGES, num_steps, variance_type, progress, labels=class_labels)
    return make_grid(to_uint8(output.images * 2 - 1))  # images: [N x C x H x W] in [0, 1]


def reverse_trajectory(
    model: SpaceModel, seed, num_images, num_steps, variance_type, num_frames, progress=gr.Progress(), class_labels=""
) -> tuple[PIL.Image.Image, str, str]:
    """
    Sample as `generate` does, recording x_t and the predicted x_0 at `num_frames` steps: a strip (per sample a row of
    x_t above a row of x_0), a looping GIF in gradio's cache (its `delete_cache` sweep removes it), a caption.
    """
    maximum = MAX_TRAJECTORY_IMAGES
    output = _sample(model, seed, num_images, maximum, num_steps, variance_type, progress, num_frames, class_labels)
    x_t = np.stack([to_uint8(frame) for frame in output.trajectory], axis=1)  # [N x F x H x W x C]
    x_0 = np.stack([to_uint8(frame) for frame in output.pred_original_trajectory], axis=1)
    pairs = np.stack([x_t, x_0], axis=1)  # [N x 2 x F x H x W x C]: per sample its x_t row, then its x_0 row
    frames = [make_grid(pairs[:, :, f].reshape(-1, *x_t.shape[2:]), num_columns=2) for f in range(x_t.shape[1])]
    strip = make_grid(pairs.reshape(-1, *x_t.shape[2:]), num_columns=x_t.shape[1])
    buffer = io.BytesIO()  # a looping GIF; the last frame (the sample) held longer
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_FRAME_MS * 6]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    gif = save_bytes_to_cache(buffer.getvalue(), "trajectory.gif", get_upload_folder())
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
    figure.legend(loc="center left", bbox_to_anchor=(0.13, 0.5), fontsize=8)  # the curves of both axes
    return figure_to_image(figure)


def forward_process(model: SpaceModel, digit_index, upload, t, beta_schedule: str, seed):
    """x_0 (the upload, else the digit) beside a draw of x_t ~ q(x_t | x_0), the schedule's plot, x_t's formula."""
    image = source_image(model, digit_index, upload)
    t = check_int("Timestep t", t, 0, model.num_train_timesteps - 1)
    scheduler = model.scheduler(beta_schedule=check_choice("Schedule", beta_schedule, schedule_choices(model)))
    x_0 = torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1 x C x H x W] in [-1, 1]
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(check_int("Seed", seed, 0, MAX_SEED)))
    x_t = to_uint8(scheduler.add_noise(x_0, noise, torch.tensor([t])))[0]
    alpha_bar = float(scheduler.alphas_cumprod[t])
    caption = (
        f"t = {t}: x_t = {math.sqrt(alpha_bar):.4f} x_0 + {math.sqrt(1 - alpha_bar):.4f} eps,"
        f" signal-to-noise ratio alpha-bar_t / (1 - alpha-bar_t) = {alpha_bar / max(1 - alpha_bar, 1e-300):.4g}"
    )
    return make_grid(np.stack([image, x_t]), num_columns=2), schedule_plot(scheduler, t), caption


def likelihood(model: SpaceModel, digit_index, upload, num_timesteps, num_draws, seed, progress=gr.Progress()):
    """
    The image (the upload, else the digit), the plot of its bound's terms, the bound in bits/dim and its standard
    error: the pipeline's estimate at `num_timesteps` stratified timesteps, over `num_draws` draws of them and of x_t.
    """
    image = source_image(model, digit_index, upload)
    num_timesteps = check_int("Timesteps", num_timesteps, 2, model.num_train_timesteps)
    num_draws = check_int("Noise draws", num_draws, MIN_DRAWS, MAX_DRAWS)
    generator = torch.Generator().manual_seed(check_int("Seed", seed, 0, MAX_SEED))
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
