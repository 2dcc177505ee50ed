# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The hf-ddpm demo Space's page (four tabs, each wired to its function in `handlers.py`) and its launch."""

import functools
import os
import sys
from pathlib import Path

import gradio as gr
import torch
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

import handlers
from space_model import SpaceModel, SpaceModelError, load_space_model
from upload_quota import MAX_UPLOAD_BYTES, UploadQuota

# Gradio keeps uploads and outputs (the trajectory GIFs too) in its cache: every CACHE_SWEEP_S seconds, files older
# than CACHE_MAX_AGE_S go, and an upload request is refused (507) while the cache holds CACHE_MAX_BYTES.
CACHE_SWEEP_S = int(os.environ.get("HF_DDPM_SPACE_CACHE_SWEEP_S", "60"))
CACHE_MAX_AGE_S = int(os.environ.get("HF_DDPM_SPACE_CACHE_MAX_AGE_S", "600"))
CACHE_MAX_BYTES = int(os.environ.get("HF_DDPM_SPACE_CACHE_MAX_BYTES", str(256 * 2**20)))
# Two requests run at once (a basic CPU Space has 2 cores); the others wait in line, not sharing memory and cores.
CONCURRENCY_LIMIT = 2


def build_demo(model: SpaceModel) -> gr.Blocks:
    """The Space's page: four tabs over `model`, with its queue."""
    num_train_timesteps = model.num_train_timesteps
    source = Path(model.source).name if os.path.isdir(model.source) else model.source
    intro = f"""# DDPM digits
Denoising diffusion (Ho et al. 2020) with the Improved DDPM variances (Nichol & Dhariwal 2021), served by hf-ddpm's
`DDPMPosteriorPipeline`. Model: `{source}`, {"x".join(map(str, model.image_shape))} images, T = {num_train_timesteps}
diffusion steps, variances: {", ".join(model.variance_types)}."""
    schedules = [(handlers.SCHEDULE_LABELS.get(name, name), name) for name in handlers.schedule_choices(model)]
    last_digit = len(handlers.digits_dataset()) - 1
    default_steps = min(100, num_train_timesteps)

    def seed_input(info: str | None = None) -> gr.Number:
        return gr.Number(label="Seed", value=0, precision=0, info=info)

    def sampling_inputs(max_images: int, default_images: int) -> list[gr.components.Component]:
        return [
            seed_input(f"0 to {handlers.MAX_SEED}"),
            gr.Slider(1, max_images, value=default_images, step=1, label="Number of images"),
            gr.Slider(
                model.min_steps, num_train_timesteps, value=default_steps, step=1, label="Denoising steps (respaced)"
            ),
            gr.Radio(list(model.variance_types), value=model.default_variance_type, label="Variance"),
        ]

    def class_inputs() -> list[gr.components.Component]:
        """A class-conditional model's labels (the handlers' last input); none for an unconditional model."""
        if not model.num_classes:
            return []
        info = f"0 to {model.num_classes - 1}, comma-separated, taken in turn; empty: random classes"
        return [gr.Textbox(label="Class labels", info=info)]

    def image_inputs() -> list[gr.components.Component]:
        return [
            gr.Slider(0, last_digit, value=0, step=1, label="Digit (scikit-learn digits dataset)"),
            gr.File(label="...or upload an image (used instead)", file_types=["image"], type="filepath"),
        ]

    def serve(triggers, handler, inputs, outputs, api_name: str) -> None:
        """`handler(model, *inputs)` on `triggers`, in the tabs' one concurrency group, on raw values it checks."""
        handler = functools.partial(handler, model)
        gr.on(triggers, handler, inputs, outputs, api_name=api_name, concurrency_id="model", preprocess=False)

    with gr.Blocks(title="DDPM digits", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown(intro)
        with gr.Tab("Generate"), gr.Row():
            with gr.Column():
                inputs = sampling_inputs(handlers.MAX_IMAGES, 16) + class_inputs()
                button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            grid = gr.Image(label="Samples", format="png", interactive=False, elem_id="generate-grid")
            serve([button.click], handlers.generate, inputs, grid, "generate")

        with gr.Tab("Watch the reverse process"), gr.Row():
            with gr.Column():
                inputs = sampling_inputs(handlers.MAX_TRAJECTORY_IMAGES, 4)
                inputs.append(gr.Slider(handlers.MIN_FRAMES, handlers.MAX_FRAMES, value=10, step=1, label="Frames"))
                inputs += class_inputs()
                button = gr.Button("Run the reverse process", variant="primary")
            with gr.Column():
                outputs = [
                    gr.Image(label="x_t (upper row) and predicted x_0 (lower row), per sample", format="png"),
                    gr.Image(label="Animation: x_t | predicted x_0", type="filepath"),
                    gr.Markdown(),
                ]
            serve([button.click], handlers.reverse_trajectory, inputs, outputs, "trajectory")

        with gr.Tab("Forward process"), gr.Row():
            with gr.Column():
                inputs = image_inputs()
                t = gr.Slider(0, num_train_timesteps - 1, value=num_train_timesteps // 2, step=1, label="Timestep t")
                schedule = gr.Radio(schedules, value=model.scheduler_config["beta_schedule"], label="Noise schedule")
                inputs += [t, schedule, seed_input()]
                button = gr.Button("Sample x_t ~ q(x_t | x_0)", variant="primary")
            with gr.Column():
                outputs = [
                    gr.Image(label="x_0 | x_t", format="png"),
                    gr.Image(label="Noise schedule", format="png"),
                    gr.Markdown(),
                ]
            serve([button.click, t.release], handlers.forward_process, inputs, outputs, "forward")

        # the bound of an image needs its class, which an upload does not carry
        if not model.num_classes:
            with gr.Tab("Likelihood"), gr.Row():
                with gr.Column():
                    inputs = image_inputs()
                    terms = min(50, num_train_timesteps)
                    inputs.append(gr.Slider(2, num_train_timesteps, value=terms, step=1, label="Timesteps evaluated"))
                    inputs.append(
                        gr.Slider(handlers.MIN_DRAWS, handlers.MAX_DRAWS, value=4, step=1, label="Noise draws")
                    )
                    inputs.append(seed_input())
                    button = gr.Button("Compute bits/dim", variant="primary")
                with gr.Column():
                    outputs = [
                        gr.Image(label="Evaluated image (at the model's size)", format="png"),
                        gr.Image(label="Terms of the bound", format="png"),
                        gr.Number(label="Bits/dim (upper bound on -log2 p(x) per dimension)"),
                        gr.Number(label="Standard error"),
                    ]
                serve([button.click], handlers.likelihood, inputs, outputs, "likelihood")
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=64)


def main() -> None:
    try:
        model = load_space_model()
    except SpaceModelError as error:
        sys.exit(f"ddpm-digits Space: {error}")  # one line on stderr, exit status 1
    # the cores, shared by the requests that run at once: more threads than cores make OpenMP spin
    torch.set_num_threads(max(1, torch.get_num_threads() // CONCURRENCY_LIMIT))
    quota = Middleware(UploadQuota, cache_dir=get_upload_folder(), max_cache_bytes=CACHE_MAX_BYTES)
    build_demo(model).launch(max_file_size=MAX_UPLOAD_BYTES, app_kwargs={"middleware": [quota]})


if __name__ == "__main__":
    main()
