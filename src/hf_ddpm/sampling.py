"""`hf-ddpm sample`: draw images from a saved or Hub pipeline and write a grid, PNGs, an .npz and a trajectory."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import numpy as np

from ._choices import LEARNED_VARIANCE_TYPES, MAX_SEED, VARIANCE_TYPES, int_range
from ._devices import DEVICES, resolve_device
from ._errors import UsageError
from .files import check_output_dir, make_public, replace_folder
from .images import auto_scale, image_grid

MAX_SCALE = 64  # an 8x8 digit as a 512x512 tile; more only makes huge PNGs

EXAMPLE = """Example:
  hf-ddpm sample outputs/ddpm-digits --num_images 64 --num_inference_steps 100 --trajectory
  hf-ddpm sample google/ddpm-cifar10-32 --num_images 16 --device cuda --dtype float16
  hf-ddpm sample adm-64-cond --num_images 8 --num_inference_steps 50 --class_labels 1 207 --device cuda
"""


def generate_samples(
    pipeline,
    num_samples: int,
    num_inference_steps: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
    trajectory_frames: int | None = None,
    class_labels: list[int] | None = None,
):
    """
    Draw samples by ancestral sampling, `batch_size` per pipeline call, quantized to 256 levels like saved images.

    Args:
        pipeline: a `DDPMPosteriorPipeline`, or any pipeline that takes `batch_size`, `generator`,
            `num_inference_steps` and `output_type="np"` (diffusers' `DDPMPipeline`).
        num_samples (`int`): N.
        num_inference_steps (`int`, *optional*): the chain length; the scheduler's training steps when `None`.
        batch_size (`int`, defaults to 256): images per pipeline call.
        seed (`int`, defaults to 0): seeds one CPU generator that every batch draws from in turn: one seed and
            `batch_size`, the same samples on every device.
        show_progress (`bool`, defaults to `True`): one progress bar over the samples.
        trajectory_frames (`int`, *optional*): also record this many steps of the first batch's chain.
        class_labels (`list[int]`, *optional*): the classes of a class-conditional model, taken in turn for the N
            images; random when `None`.

    Returns:
        The first batch's pipeline output with `images` replaced by all N: a float tensor [N x C x H x W] in [0, 1].
    """
    import torch
    from tqdm.auto import tqdm

    num_inference_steps = num_inference_steps or pipeline.scheduler.config.num_train_timesteps
    generator = torch.Generator("cpu").manual_seed(seed)
    pipeline.set_progress_bar_config(disable=True)  # one bar over all samples instead of one per batch
    trajectory = (
        {} if trajectory_frames is None else {"return_trajectory": True, "trajectory_frames": trajectory_frames}
    )
    outputs = []
    with tqdm(total=num_samples, desc=f"sampling ({num_inference_steps} steps)", disable=not show_progress) as bar:
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            kwargs = trajectory if start == 0 else {}
            if class_labels:
                kwargs["class_labels"] = [class_labels[i % len(class_labels)] for i in range(start, start + count)]
            outputs.append(
                pipeline(
                    batch_size=count,
                    generator=generator,
                    num_inference_steps=num_inference_steps,
                    output_type="np",
                    **kwargs,
                )
            )
            bar.update(count)
    images = torch.from_numpy(np.concatenate([np.asarray(output.images, np.float32) for output in outputs]))
    images = (images.permute(0, 3, 1, 2).clamp(0, 1) * 255).round() / 255
    labels = None if outputs[0].class_labels is None else torch.cat([output.class_labels for output in outputs])
    return dataclasses.replace(outputs[0], images=images, class_labels=labels)


def load_pipeline(args: argparse.Namespace, device, **kwargs):
    """The pipeline of `args.model` at --revision on `device`, with --variance_type where the command has one."""
    from .pipeline_ddpm_posterior import DDPMPosteriorPipeline

    pipeline = DDPMPosteriorPipeline.from_pretrained(args.model, revision=args.revision, **kwargs)
    return with_variance_type(pipeline, getattr(args, "variance_type", None)).to(device)


def with_variance_type(pipeline, variance_type: str | None):
    """A pipeline whose scheduler uses `variance_type` (`UsageError` if it cannot), sharing the UNet; None: itself."""
    if variance_type is None:
        return pipeline
    unet = pipeline.unet.config
    if variance_type in LEARNED_VARIANCE_TYPES and unet.out_channels != 2 * unet.in_channels:
        raise UsageError(
            f"--variance_type {variance_type!r} needs a UNet with learned variances (2 x {unet.in_channels} output"
            f" channels); this one does not output variances: use 'fixed_small' or 'fixed_large'."
        )
    from .scheduling_ddpm_posterior import DDPMPosteriorScheduler

    try:  # an unknown type, or `analytic` without the model's statistics
        scheduler = DDPMPosteriorScheduler.from_config(pipeline.scheduler.config, variance_type=variance_type)
    except ValueError as error:
        raise UsageError(f"--variance_type: {error}") from None
    return type(pipeline)(unet=pipeline.unet, scheduler=scheduler)


def inference_steps(pipeline, requested: int | None, default: int) -> int:
    """`--num_inference_steps`, else `default` capped at the model's T; more than T is refused (`UsageError`)."""
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    if requested is not None and requested > num_train_timesteps:
        raise UsageError(
            f"--num_inference_steps {requested} exceeds the {num_train_timesteps} steps the model was trained with."
        )
    return requested or min(default, num_train_timesteps)


def check_empty_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that holds files (unless asked to replace it)."""
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UsageError(
            f"--output_dir {output_dir} is not empty: pass --overwrite_output_dir to replace it (all its files)."
        )


def write_outputs(sampled, output_dir: str, scale: int, individual: bool = True) -> dict:
    """
    Write grid.png, images/NNNNN.png, samples.npz and, with a trajectory, trajectory.gif; return their paths.

    They are written into a staging folder beside `output_dir`, which then replaces `output_dir` whole with one
    rename: a killed run leaves no `output_dir` that looks complete, and no file of an earlier run remains.
    """
    from diffusers.utils import make_image_grid, numpy_to_pil

    output_dir = os.path.abspath(output_dir)
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    images = (sampled.images * 255).round().byte().permute(0, 2, 3, 1).numpy()  # uint8 [N x H x W x C]
    names = {"grid": "grid.png", "npz": "samples.npz"}
    prefix = f".{os.path.basename(output_dir)}.staging-"
    with tempfile.TemporaryDirectory(
        prefix=prefix, dir=os.path.dirname(output_dir), ignore_cleanup_errors=True
    ) as staging:
        image_grid(images, scale=scale).save(os.path.join(staging, names["grid"]))
        labels = {} if sampled.class_labels is None else {"class_labels": sampled.class_labels.numpy()}
        np.savez_compressed(os.path.join(staging, names["npz"]), images=images, **labels)  # and each image's class
        if individual:
            names["images"] = "images"
            os.makedirs(os.path.join(staging, "images"))
            for index, image in enumerate(numpy_to_pil(images / 255.0)):
                image.save(os.path.join(staging, "images", f"{index:05d}.png"))
        if sampled.trajectory is not None:  # each frame: x_t | the predicted x_0 of 16 images, then the samples
            pairs = [*zip(sampled.trajectory, sampled.pred_original_trajectory, strict=True), (images, images)]
            frames = [make_image_grid([image_grid(x[:16], scale=scale) for x in pair], 1, 2) for pair in pairs]
            names["trajectory"] = "trajectory.gif"
            durations = [80] * (len(frames) - 1) + [1000]  # ms; the last frame held a little longer
            path = os.path.join(staging, names["trajectory"])
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
        make_public(staging)
        replace_folder(staging, output_dir)  # the staging folder becomes `output_dir`: nothing left to clean up
    return {key: os.path.join(output_dir, name) for key, name in names.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    check_output_dir(args.output_dir, inputs=[args.model])
    check_empty_output_dir(args.output_dir, args.overwrite_output_dir)
    device = resolve_device(args.device)
    if args.dtype == "float16" and device.type == "cpu":
        raise UsageError("--dtype float16 is not supported on the CPU; use bfloat16 or float32.")
    pipeline = load_pipeline(args, device, torch_dtype=getattr(torch, args.dtype))
    steps = inference_steps(pipeline, args.num_inference_steps, default=100)
    labels, num_classes = args.class_labels, pipeline.unet.config.get("num_class_embeds")
    if labels and num_classes is None:
        raise UsageError("--class_labels needs a class-conditional model; this one is unconditional.")
    if labels and not all(0 <= label < num_classes for label in labels):
        raise UsageError(f"--class_labels must lie in [0, {num_classes}), got {' '.join(map(str, labels))}.")
    if labels and len(labels) > args.num_images:
        raise UsageError(f"--class_labels gives {len(labels)} classes for --num_images {args.num_images}.")
    frames = args.trajectory_frames if args.trajectory else None
    sampled = generate_samples(
        pipeline, args.num_images, steps, args.batch_size, args.seed, trajectory_frames=frames, class_labels=labels
    )
    scale = args.scale or auto_scale(max(sampled.images.shape[2:]))
    paths = write_outputs(sampled, args.output_dir, scale, individual=not args.no_individual)
    print(json.dumps(paths, indent=2))
    return 0


def add_run_arguments(parser, batch_size: int, batch_help: str, seed_help: str) -> None:
    """The model, --batch_size, --seed, --device and --revision: what every command that runs a model takes."""
    parser.add_argument("model", help="a saved pipeline folder (train.py, save_pretrained) or a Hub repo id")
    parser.add_argument(
        "--batch_size", type=int_range(1), default=batch_size, help=f"{batch_help} (default: {batch_size})"
    )
    parser.add_argument("--seed", type=int_range(0, MAX_SEED), default=0, help=f"seed {seed_help} (default: 0)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where to run (default: auto)")
    parser.add_argument("--revision", help="the Hub revision of the model (a branch, tag or commit)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="draw images from a trained pipeline",
        description="Draw images from a saved pipeline folder or a Hub repo id; write a grid PNG, individual PNGs,"
        " an .npz of uint8 arrays and, with --trajectory, an animated GIF of the reverse process.",
        epilog=EXAMPLE,
    )
    add_run_arguments(parser, 64, "images per forward pass", "of the noise: one seed and --batch_size, one result")
    parser.add_argument("--num_images", type=int_range(1), default=16, help="how many images to draw (default 16)")
    parser.add_argument(
        "--num_inference_steps", type=int_range(1), help="denoising steps, respaced (default 100, at most T)"
    )
    parser.add_argument(
        "--variance_type",
        choices=VARIANCE_TYPES,
        help="override the model's (learned ones only for a model that outputs variances; analytic after"
        " `hf-ddpm analytic`)",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="weights and activations"
    )
    parser.add_argument("--output_dir", default="samples", help="where to write the outputs (default ./samples)")
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="replace a non-empty --output_dir (all its files) instead of refusing to start",
    )
    parser.add_argument(
        "--scale",
        type=int_range(1, MAX_SCALE),
        help=f"nearest-neighbour zoom of the grid, 1 to {MAX_SCALE} (default: auto)",
    )
    parser.add_argument("--no_individual", action="store_true", help="do not write one PNG per image")
    parser.add_argument(
        "--class_labels",
        type=int,
        nargs="+",
        help="classes of a class-conditional model, taken in turn for the images (default: random)",
    )
    parser.add_argument("--trajectory", action="store_true", help="also write trajectory.gif (x_t | predicted x_0)")
    parser.add_argument(
        "--trajectory_frames", type=int_range(2), default=50, help="frames of the animation (default 50)"
    )
    parser.set_defaults(handler=run)
