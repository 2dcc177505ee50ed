# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`hf-ddpm eval`: bits/dim and sample-quality metrics of a saved pipeline (torch is imported by the handler)."""

import argparse
import os

from .._choices import VARIANCE_TYPES, int_range
from .._devices import resolve_device
from .._errors import UsageError
from ..files import check_output_dir
from ..sampling import add_run_arguments
from .data import add_dataset_arguments, describe_dataset, is_digits_model, load_dataset_images, uses_digits

DESCRIPTION = """\
Evaluate a saved DDPM pipeline (a local folder or a Hub repo id):

  bpd        the variational bound in bits/dim on a dataset split, all T terms or a stratified estimate from
             --num_timesteps; the mean and its standard error
  fd-digits  Frechet distance of samples to the digits in the features of the digits classifier shipped with
             hf_ddpm, with a bootstrap standard error (--bootstrap), the classifier's confidence and class coverage
  fd-dinov2  Frechet distance in DINOv2 features (--dinov2_model, a local folder or a cached Hub id)
  fid        FID with torchmetrics' Inception-v3 from local weights (--inception_weights)

Results print as a table and are merged into eval_results.json next to the model (or in --output_dir), beside a
grid of the samples, eval_samples.png."""

EPILOG = """\
Example:
  hf-ddpm eval outputs/ddpm-digits --metric bpd --num_timesteps 100
  hf-ddpm eval outputs/ddpm-digits --metric fd-digits --num_samples 1000 --num_inference_steps 250
  hf-ddpm eval outputs/ddpm-digits --metric fd-digits --variance_type fixed_large --num_inference_steps 50
  hf-ddpm eval outputs/ddpm-digits --metric fid --inception_weights ~/weights-inception-2015-12-05-6726825d.pth"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="bits/dim and sample-quality metrics (FD) of a saved model",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    add_run_arguments(parser, 256, "images (or image-timestep pairs) per UNet call", "of the samples and the noise")
    parser.add_argument(
        "--metric",
        nargs="+",
        choices=("bpd", "fid", "fd-dinov2", "fd-digits"),
        default=["bpd"],
        help="one or more metrics (default: bpd)",
    )
    parser.add_argument(
        "--output_dir",
        help="where to write eval_results.json and eval_samples.png (default: the model folder; for a Hub repo,"
        " outputs/eval/OWNER--NAME)",
    )
    add_dataset_arguments(
        parser.add_argument_group("dataset (bpd, and the reference images of fid and fd-dinov2)"),
        split_default="test",
        split_help="the split: for digits 'test' (the 180 held-out images, default), 'train' or 'all'; for"
        " --dataset_name any split it has (--train_data_dir: every image of the folder)",
    )

    bpd = parser.add_argument_group("bits/dim")
    bpd.add_argument(
        "--num_timesteps",
        type=int_range(2),
        help="estimate the KL terms from K >= 2 timesteps, the decoder and one drawn per stratum: unbiased and T/K"
        " times faster (default: all T)",
    )
    bpd.add_argument(
        "--clip_denoised",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clip the predicted x_0 to [-1, 1] in the bound, as Improved DDPM does (default: on)",
    )

    sampling = parser.add_argument_group("samples (fid, fd-dinov2, fd-digits)")
    sampling.add_argument(
        "--num_samples", type=int_range(2), default=1000, help="how many samples to generate (default: 1000)"
    )
    sampling.add_argument(
        "--num_inference_steps", type=int_range(1), help="sampling steps (default: the training steps T)"
    )
    sampling.add_argument(
        "--variance_type",
        choices=VARIANCE_TYPES,
        help="override the scheduler's reverse-process variance (also used by bpd); default: the saved one",
    )
    sampling.add_argument(
        "--reference",
        default="digits",
        choices=("digits", "digits-train", "digits-test"),
        help="the reference set of fd-digits: all 1,797 digits (default) or one side of the fixed split",
    )
    sampling.add_argument(
        "--bootstrap",
        type=int_range(0),
        default=200,
        help="resamples of the samples' features for fd-digits' standard error: 0 (none) or at least 2 (default: 200)",
    )
    sampling.add_argument(
        "--dinov2_model", default="facebook/dinov2-base", help="DINOv2 model id or folder (fd-dinov2)"
    )
    sampling.add_argument(
        "--inception_weights",
        help="the FID Inception weights file (default: torch.hub's checkpoints folder, as torchmetrics uses)",
    )
    parser.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..images import image_grid
    from ..sampling import generate_samples, inference_steps, load_pipeline
    from .frechet import Dinov2Features, InceptionFID
    from .metrics import fd_digits, fd_dinov2, fid, summarize_bits_per_dim, write_eval_results

    metrics = set(args.metric)
    if args.bootstrap == 1:
        raise UsageError("--bootstrap must be 0 (none) or at least 2 resamples, got 1.")
    if args.output_dir is not None:
        check_output_dir(args.output_dir)
    uses_digits(args)
    device = resolve_device(args.device)
    # the feature extractors first: a missing Inception or DINOv2 model fails before any sampling
    inception = InceptionFID(args.inception_weights, device, args.batch_size) if "fid" in metrics else None
    dinov2 = Dinov2Features(args.dinov2_model, device, args.batch_size) if "fd-dinov2" in metrics else None

    pipeline = load_pipeline(args, device)
    config = pipeline.unet.config
    if "fd-digits" in metrics and not is_digits_model(config):
        raise UsageError(
            f"--metric fd-digits scores 8x8 grayscale digits, but this model makes {config.in_channels}-channel"
            f" {config.sample_size} images; use fd-dinov2 or fid."
        )
    if "bpd" in metrics and config.get("num_class_embeds") is not None:
        raise UsageError(
            "--metric bpd: this model is class-conditional and the bound needs each image's class, which this command"
            " does not read; call pipe.bits_per_dim(images, class_labels=...) from Python."
        )
    steps = inference_steps(pipeline, args.num_inference_steps, default=pipeline.scheduler.config.num_train_timesteps)
    images = load_dataset_images(args, config) if metrics - {"fd-digits"} else None  # bpd's, and the references
    samples = None
    if metrics - {"bpd"}:  # [N x C x H x W] in [0, 1]
        samples = generate_samples(pipeline, args.num_samples, steps, args.batch_size, args.seed).images

    # each metric's eval_results.json entry: the value, its standard error and how it was measured
    settings = {"seed": args.seed, "variance_type": pipeline.scheduler.config.variance_type}
    sampled = {"num_inference_steps": steps, **settings}
    dataset = describe_dataset(args)
    results = {}
    if "bpd" in metrics:
        output = pipeline.bits_per_dim(
            images,
            generator=torch.Generator().manual_seed(args.seed),
            batch_size=args.batch_size,
            num_timesteps=args.num_timesteps,
            clip_denoised=args.clip_denoised,
        )
        summary = summarize_bits_per_dim(output)
        results["bits_per_dim"] = {**summary, **dataset, **settings, "clip_denoised": args.clip_denoised}
    if "fd-digits" in metrics:
        summary = fd_digits(samples, args.reference, bootstrap=args.bootstrap, seed=args.seed)
        results["fd_digits"] = {**summary, **sampled}
    if "fd-dinov2" in metrics:
        results["fd_dinov2"] = {**fd_dinov2(samples, images, dinov2), **dataset, **sampled}
    if "fid" in metrics:
        results["fid"] = {**fid(samples, images, inception), **dataset, **sampled}

    print(format_table(results))
    hub_folder = os.path.join("outputs", "eval", args.model.replace("/", "--"))  # for a Hub repo id
    output_dir = args.output_dir or (args.model if os.path.isdir(args.model) else hub_folder)  # "" was refused
    print(f"wrote {write_eval_results(output_dir, results)}")
    if samples is not None:
        path = os.path.join(output_dir, "eval_samples.png")
        image_grid(samples[:64].permute(0, 2, 3, 1).numpy(), scale=4, padding=4).save(path)
        print(f"wrote {path}")
    return 0


def format_table(results: dict) -> str:
    """A markdown table of eval_results.json entries: metric | value | standard error | how it was measured."""
    lines = ["| metric | value | std. error | details |", "|---|---:|---:|---|"]
    for name, entry in results.items():
        error = "" if entry.get("standard_error") is None else f"{entry['standard_error']:.4f}"
        details = ", ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in entry.items()
            if key not in ("value", "standard_error", "class_histogram")
        )
        lines.append(f"| {name} | {entry['value']:.4f} | {error} | {details} |")
    return "\n".join(lines)
