"""`hf-ddpm sample`: draw images from a saved or Hub pipeline and write a grid, PNGs, an .npz and a trajectory."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from ._choices import VARIANCE_TYPES
from ._devices import resolve_device
from ._errors import UsageError, check_at_least
from ._variance import with_variance_type
from .files import make_public, replace_folder
from .images import auto_scale, image_grid, save_animation, side_by_side, to_uint8

if TYPE_CHECKING:  # torch and diffusers are imported where used: `hf-ddpm --help` needs none
    import torch

    from .pipeline_ddpm_posterior import DDPMPosteriorPipeline

DTYPES = ("float32", "float16", "bfloat16")  # names of torch dtypes
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
MAX_SCALE = 64  # an 8x8 digit as a 512x512 tile; more only makes huge PNGs

EXAMPLE = """Example:
  hf-ddpm sample outputs/ddpm-digits --num_images 64 --num_inference_steps 100 --trajectory
  hf-ddpm sample google/ddpm-cifar10-32 --num_images 16 --device cuda --dtype float16
"""


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}.")
    if name == "float16" and device.type == "cpu":
        raise UsageError("--dtype float16 is not supported on the CPU; use bfloat16 or float32.")
    return getattr(torch, name)


def sample(
    pipe: DDPMPosteriorPipeline,
    num_images: int,
    num_inference_steps: int,
    seed: int = 0,
    batch_size: int = 64,
    trajectory_frames: int | None = None,
) -> dict:
    """
    Draw `num_images` images in batches of `batch_size`. Batch b uses the generator seeded with `seed + b`, so the
    result is reproducible for a seed and a batch size.

    Returns:
        `dict` with `images` (uint8 [N x H x W x C]) and, when `trajectory_frames` is set, `trajectory` and
        `pred_original_trajectory` ([F x n x C x H x W] in [-1, 1], for the first batch) and `trajectory_timesteps`.
    """
    import torch
    from tqdm.auto import tqdm

    results, first = [], None
    batches = range(0, num_images, batch_size)
    for batch_index, start in enumerate(tqdm(batches, desc="batches", disable=len(batches) == 1)):
        count = min(batch_size, num_images - start)
        output = pipe(
            batch_size=count,
            generator=torch.Generator(device="cpu").manual_seed(seed + batch_index),
            num_inference_steps=num_inference_steps,
            output_type="np",
            return_trajectory=trajectory_frames is not None and batch_index == 0,
            trajectory_frames=trajectory_frames,
        )
        results.append(to_uint8(output.images))
        if first is None:
            first = output
    sampled = {"images": np.concatenate(results)}
    if trajectory_frames is not None:
        sampled.update(
            trajectory=first.trajectory,
            pred_original_trajectory=first.pred_original_trajectory,
            trajectory_timesteps=first.trajectory_timesteps,
        )
    return sampled


def trajectory_frames_images(sampled: dict, max_images: int = 16, scale: int = 1) -> list:
    """One frame per recorded step: the grid of x_t beside the grid of predicted x_0."""
    frames = []
    for x_t, x0 in zip(sampled["trajectory"], sampled["pred_original_trajectory"], strict=True):
        frames.append(
            side_by_side(image_grid(x_t[:max_images], scale=scale), image_grid(x0[:max_images], scale=scale))
        )
    final = image_grid(sampled["images"][:max_images] / 255.0, scale=scale)
    frames.append(side_by_side(final, final))
    return frames


def write_outputs(sampled: dict, output_dir: str, scale: int, individual: bool = True) -> dict:
    """
    Write grid.png, images/NNNNN.png, samples.npz and, with a trajectory, trajectory.gif; return their paths.

    Everything is written into a staging folder beside `output_dir` and moved into place with one rename at the end:
    a killed run leaves no `output_dir` that looks complete, and an existing `output_dir` (which `run` only lets
    through when empty or with --overwrite_output_dir) is replaced whole, so no file of an earlier run remains.
    """
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.staging-", dir=parent)
    try:
        _write_files(sampled, staging, scale, individual)
        make_public(staging)
        replace_folder(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    paths = {"grid": "grid.png", "npz": "samples.npz"}
    if individual:
        paths["images"] = "images"
    if "trajectory" in sampled:
        paths["trajectory"] = "trajectory.gif"
    return {key: os.path.join(output_dir, name) for key, name in paths.items()}


def _write_files(sampled: dict, folder: str, scale: int, individual: bool) -> None:
    images = sampled["images"]
    image_grid(images / 255.0, scale=scale).save(os.path.join(folder, "grid.png"))
    np.savez_compressed(os.path.join(folder, "samples.npz"), images=images)
    if individual:
        os.makedirs(os.path.join(folder, "images"))
        for index, image in enumerate(images):
            image_grid(image[None] / 255.0, scale=1, padding=0).save(
                os.path.join(folder, "images", f"{index:05d}.png")
            )
    if "trajectory" in sampled:
        save_animation(trajectory_frames_images(sampled, scale=scale), os.path.join(folder, "trajectory.gif"))


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that holds files (unless asked to replace it) or is not a folder."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir {output_dir} is a file, not a folder.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UsageError(
            f"--output_dir {output_dir} is not empty: pass --overwrite_output_dir to replace it (all its files)."
        )


def _bounded_int(name: str, low: int, high: int):
    """An argparse type: an integer in [low, high], or an error naming the flag's range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text!r}")
        return value

    parse.__name__ = name
    return parse


def run(args: argparse.Namespace) -> int:
    from .pipeline_ddpm_posterior import DDPMPosteriorPipeline

    check_at_least(args, {"num_images": 1, "num_inference_steps": 1, "batch_size": 1, "trajectory_frames": 2})
    last_seed = args.seed + (args.num_images - 1) // args.batch_size  # batch b draws with seed + b
    if last_seed > MAX_SEED:
        raise UsageError(f"--seed {args.seed}: batch seeds run up to {last_seed}, past the largest seed {MAX_SEED}.")
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    pipe = DDPMPosteriorPipeline.from_pretrained(args.model, torch_dtype=dtype, revision=args.revision).to(device)
    num_train_timesteps = pipe.scheduler.config.num_train_timesteps
    if args.num_inference_steps is None:
        args.num_inference_steps = min(100, num_train_timesteps)
    if args.num_inference_steps > num_train_timesteps:
        raise UsageError(
            f"--num_inference_steps {args.num_inference_steps} exceeds the {num_train_timesteps} steps the model was"
            " trained with."
        )
    pipe = with_variance_type(pipe, args.variance_type)
    sampled = sample(
        pipe,
        args.num_images,
        args.num_inference_steps,
        seed=args.seed,
        batch_size=args.batch_size,
        trajectory_frames=args.trajectory_frames if args.trajectory else None,
    )
    scale = args.scale or auto_scale(max(sampled["images"].shape[1:3]))
    paths = write_outputs(sampled, args.output_dir, scale, individual=not args.no_individual)
    print(json.dumps(paths, indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="draw images from a trained pipeline",
        description="Draw images from a saved pipeline folder or a Hub repo id; write a grid PNG, individual PNGs,"
        " an .npz of uint8 arrays and, with --trajectory, an animated GIF of the reverse process.",
        epilog=EXAMPLE,
    )
    parser.add_argument("model", help="a folder written by train.py / save_pretrained, or a Hub repo id")
    parser.add_argument("--num_images", type=int, default=16, help="how many images to draw (default 16)")
    parser.add_argument("--num_inference_steps", type=int, help="denoising steps, respaced (default 100, at most T)")
    parser.add_argument(
        "--variance_type",
        help=f"override the model's: {', '.join(VARIANCE_TYPES)} (learned ones only for a model that outputs"
        " variances; analytic after `hf-ddpm analytic`)",
    )
    parser.add_argument(
        "--seed",
        type=_bounded_int("seed", 0, MAX_SEED),
        default=0,
        help=f"random seed in [0, {MAX_SEED}]; batch b uses seed + b (default 0)",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default float32)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of a repo id")
    parser.add_argument("--output_dir", default="samples", help="where to write the outputs (default ./samples)")
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="replace a non-empty --output_dir (all its files) instead of refusing to start",
    )
    parser.add_argument(
        "--scale",
        type=_bounded_int("scale", 1, MAX_SCALE),
        help=f"nearest-neighbour zoom of the grid, 1 to {MAX_SCALE} (default: auto)",
    )
    parser.add_argument("--no_individual", action="store_true", help="do not write one PNG per image")
    parser.add_argument("--trajectory", action="store_true", help="also write trajectory.gif (x_t | predicted x_0)")
    parser.add_argument("--trajectory_frames", type=int, default=50, help="frames of the animation (default 50)")
    parser.set_defaults(handler=run)
