# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The hf-ddpm demo Space: sample digits, watch the reverse process, noise an image, measure its bits/dim.

Runs locally with `python spaces/ddpm-digits/app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, default
127.0.0.1:7860) and as a Hugging Face Space unchanged. The model is a saved `DDPMPosteriorPipeline`: a folder or Hub
repo id from the environment variable HF_DDPM_SPACE_MODEL, by default the `model` folder beside this file.

The Space needs only the packages in requirements.txt, not hf_ddpm: the saved pipeline carries its own pipeline and
scheduler modules, which diffusers loads with `trust_remote_code=True` (they import only torch, numpy and diffusers).

This file is the page: its layout, the wiring of each tab to its function in `handlers.py` (where an `InputError`
becomes a `gr.Error` shown in the page), and the launch. `space_model.py` loads the model, `images.py` draws what the
tabs show, `upload_quota.py` bounds what uploads keep on disk.
"""

import contextlib
import os
import sys
from pathlib import Path

import gradio as gr
import torch
from gradio.utils import get_upload_folder as gradio_cache_dir
from starlette.middleware import Middleware

import handlers
from handlers import InputError
from images import make_grid, save_temporary_gif
from space_model import SpaceModel, SpaceModelError, load_space_model
from upload_quota import UploadQuota

# Gradio keeps uploads and outputs in its cache: every CACHE_SWEEP_S seconds, files older than CACHE_MAX_AGE_S go,
# and an upload request is refused (507) while the cache holds CACHE_MAX_BYTES.
CACHE_SWEEP_S = int(os.environ.get("HF_DDPM_SPACE_CACHE_SWEEP_S", "60"))
CACHE_MAX_AGE_S = int(os.environ.get("HF_DDPM_SPACE_CACHE_MAX_AGE_S", "600"))
CACHE_MAX_BYTES = int(os.environ.get("HF_DDPM_SPACE_CACHE_MAX_BYTES", str(256 * 2**20)))
# Two requests run at once (a basic CPU Space has 2 cores); the others wait in line, not sharing memory and cores.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 64
# Every event: one concurrency group for all tabs, and the raw values passed on (preprocess=False) to the handlers,
# which check every one of them (gradio's own range checks would answer first, with messages that do not name it).
MODEL_EVENT = {"concurrency_id": "model", "preprocess": False}

INTRO = """# DDPM digits
Denoising diffusion (Ho et al. 2020) with the Improved DDPM variances (Nichol & Dhariwal 2021), built on
hf-ddpm's `DDPMPosteriorPipeline`, loaded by diffusers from the model's own code. Model: `{source}`,
{channels}x{height}x{width} images, T = {T} diffusion steps, variances: {variances}.
"""


@contextlib.contextmanager
def user_errors():
    """Show an `InputError` in the page as a `gr.Error` (the message, no traceback)."""
    try:
        yield
    except InputError as error:
        raise gr.Error(str(error), print_exception=False) from None


def steps_progress(progress: gr.Progress):
    """A handler's `progress(steps_done, num_steps)` callback drawn as gradio's progress bar."""
    return lambda done, total: progress((done, total), desc="Denoising", unit="steps")


def build_demo(model: SpaceModel | None = None) -> gr.Blocks:
    """The Space's page: four tabs over `model` (loaded from HF_DDPM_SPACE_MODEL when None), with its queue."""
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
    schedules = [(handlers.SCHEDULE_LABELS.get(name, name), name) for name in handlers.schedule_choices(model)]
    num_digits = len(handlers.digits_dataset())

    def sampling_inputs(max_images: int, default_images: int):
        seed = gr.Number(label="Seed", value=0, precision=0, info=f"0 to {handlers.MAX_SEED}")
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
            return handlers.generate(model, seed, num_images, num_steps, variance_type, steps_progress(progress))

    def on_trajectory(seed, num_images, num_steps, variance_type, num_frames, progress=gr.Progress()):
        with user_errors():
            result = handlers.reverse_trajectory(
                model, seed, num_images, num_steps, variance_type, num_frames, steps_progress(progress)
            )
            return result.strip, save_temporary_gif(result.frames), result.caption

    def on_forward(digit_index, upload, t, beta_schedule, seed):
        with user_errors():
            image = handlers.source_image(model, digit_index, upload)
            result = handlers.forward_process(model, image, t, beta_schedule, seed)
            return result.pair, handlers.schedule_plot(model, beta_schedule, t), result.caption

    def on_likelihood(digit_index, upload, num_timesteps, num_draws, seed, progress=gr.Progress()):
        with user_errors():
            image = handlers.source_image(model, digit_index, upload)
            progress(0.0, desc="Evaluating the variational bound")
            result = handlers.likelihood(model, image, num_timesteps, num_draws, seed)
            return make_grid(image[None]), handlers.likelihood_plot(result), result.bpd, result.standard_error

    with gr.Blocks(title="DDPM digits", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown(intro)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    generate_inputs = sampling_inputs(handlers.MAX_IMAGES, 16)
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                grid = gr.Image(label="Samples", format="png", interactive=False, elem_id="generate-grid")
            generate_button.click(on_generate, generate_inputs, grid, api_name="generate", **MODEL_EVENT)

        with gr.Tab("Watch the reverse process"):
            with gr.Row():
                with gr.Column():
                    trajectory_inputs = sampling_inputs(handlers.MAX_TRAJECTORY_IMAGES, 4)
                    frames = gr.Slider(handlers.MIN_FRAMES, handlers.MAX_FRAMES, value=10, step=1, label="Frames")
                    trajectory_button = gr.Button("Run the reverse process", variant="primary")
                with gr.Column():
                    strip = gr.Image(label="x_t (upper row) and predicted x_0 (lower row), per sample", format="png")
                    animation = gr.Image(label="Animation: x_t | predicted x_0", type="filepath")
                    frame_times = gr.Markdown()
            trajectory_outputs = [strip, animation, frame_times]
            trajectory_button.click(
                on_trajectory, [*trajectory_inputs, frames], trajectory_outputs, api_name="trajectory", **MODEL_EVENT
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
            forward_inputs = [forward_index, forward_upload, t, schedule, forward_seed]
            gr.on(
                [forward_button.click, t.release],
                on_forward,
                forward_inputs,
                [pair, plot, forward_text],
                api_name="forward",
                **MODEL_EVENT,
            )

        with gr.Tab("Likelihood"):
            with gr.Row():
                with gr.Column():
                    likelihood_index, likelihood_upload = image_inputs()
                    num_timesteps = gr.Slider(
                        2, num_train_timesteps, value=min(50, num_train_timesteps), step=1, label="Timesteps evaluated"
                    )
                    num_draws = gr.Slider(handlers.MIN_DRAWS, handlers.MAX_DRAWS, value=4, step=1, label="Noise draws")
                    likelihood_seed = gr.Number(label="Seed", value=0, precision=0)
                    likelihood_button = gr.Button("Compute bits/dim", variant="primary")
                with gr.Column():
                    evaluated = gr.Image(label="Evaluated image (at the model's size)", format="png")
                    terms = gr.Image(label="Terms of the bound", format="png")
                    with gr.Row():
                        bpd = gr.Number(label="Bits/dim (upper bound on -log2 p(x) per dimension)")
                        standard_error = gr.Number(label="Standard error")
            likelihood_inputs = [likelihood_index, likelihood_upload, num_timesteps, num_draws, likelihood_seed]
            likelihood_outputs = [evaluated, terms, bpd, standard_error]
            likelihood_button.click(
                on_likelihood, likelihood_inputs, likelihood_outputs, api_name="likelihood", **MODEL_EVENT
            )
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)


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
    quota = Middleware(
        UploadQuota,
        cache_dir=gradio_cache_dir(),
        max_upload_bytes=handlers.MAX_UPLOAD_BYTES,
        max_cache_bytes=CACHE_MAX_BYTES,
    )
    build_demo(model).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=handlers.MAX_UPLOAD_BYTES,
        app_kwargs={"middleware": [quota]},
    )


if __name__ == "__main__":
    main()
