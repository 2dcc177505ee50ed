# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`hf-ddpm eval`: bits/dim of a dataset split and sample-quality metrics of a saved pipeline.

Heavy imports (torch, transformers, torchmetrics) happen inside the handler so that `hf-ddpm --help` stays fast.
"""

import argparse
import os

from .._choices import VARIANCE_TYPES, int_range
from .._devices import resolve_device
from .._digits import DIGITS_SPLITS
from .._errors import UsageError
from ..files import check_output_dir
from ..sampling import add_run_arguments
from .results import METRIC_KEYS

METRICS = ("bpd", "fid", "fd-dinov2", "fd-digits")
SAMPLES_FILE = "eval_samples.png"

DESCRIPTION = """\
Evaluate a saved DDPM pipeline (a local folder or a Hub repo id):

  bpd        the full variational bound in bits/dim on a dataset split (prior + every KL term + decoder), or
             a stratified estimate with --num_timesteps; reports the mean and its standard error
  fd-digits  Frechet distance of generated samples to the digits in the feature space of the digits
             classifier shipped with hf_ddpm, with its bootstrap standard error over the draw of the samples
             (--bootstrap), plus the classifier's mean confidence and class coverage of the samples
  fd-dinov2  Frechet distance in DINOv2 feature space (--dinov2_model, a local folder or a cached Hub id)
  fid        FID with torchmetrics' Inception-v3 from local weights (--inception_weights)

Results are printed as a table and merged into eval_results.json next to the model (or in --output_dir);
a grid of the generated samples is saved as eval_samples.png beside it."""

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
    parser.add_argument(
        "pretrained_model_name_or_path", metavar="PATH_OR_REPO", help="a saved pipeline folder or a Hub repo id"
    )
    parser.add_argument(
        "--metric", nargs="+", choices=METRICS, default=["bpd"], help="one or more metrics (default: bpd)"
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

    common = parser.add_argument_group("common")
    add_run_arguments(
        common, 256, "images (or image-timestep pairs) per UNet call", "of the samples and of the bound's noise"
    )
    common.add_argument(
        "--output_dir",
        help="where to write eval_results.json and eval_samples.png (default: the model folder; for a Hub repo,"
        " outputs/eval/OWNER--NAME)",
    )
    parser.set_defaults(handler=run_eval)


def add_dataset_arguments(group, split_default: str, split_help: str) -> None:
    """The images a command reads (`load_dataset_images`): the digits, a folder or a `datasets` dataset; a split."""
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", choices=("digits",), default="digits", help="a built-in dataset (default: digits)"
    )
    source.add_argument("--train_data_dir", help="a local folder of images instead of --dataset")
    source.add_argument("--dataset_name", help="a `datasets` dataset (Hub id or local folder)")
    group.add_argument("--split", default=split_default, help=split_help)
    group.add_argument("--max_images", type=int_range(2), help="use only the first N >= 2 images of the split")


def uses_digits(args: argparse.Namespace) -> bool:
    """Whether the dataset flags name the built-in digits; refuses a split they do not have (`UsageError`)."""
    digits = args.train_data_dir is None and args.dataset_name is None
    if digits and args.split not in DIGITS_SPLITS:
        raise UsageError(f"--split for --dataset digits must be one of {', '.join(map(repr, DIGITS_SPLITS))}.")
    return digits


def is_digits_model(config) -> bool:
    """Whether a UNet config makes 8x8 grayscale images, the only ones the built-in digits fit."""
    size = config.sample_size if isinstance(config.sample_size, int) else tuple(config.sample_size)
    return config.in_channels == 1 and size in (8, (8, 8))


def load_dataset_images(args: argparse.Namespace, pipeline):
    """The images of the dataset flags, uint8 [N x H x W x C], checked against the model's channels and size."""
    from .data import load_digits, load_images

    config = pipeline.unet.config
    if not uses_digits(args):
        folder = args.train_data_dir
        resolution = config.sample_size if isinstance(config.sample_size, int) else None
        images = load_images(
            folder or args.dataset_name, config.in_channels, args.split, resolution, image_folder=folder is not None
        )
    elif is_digits_model(config):
        images = load_digits(args.split)[0]
    else:
        raise UsageError(
            f"--dataset digits holds 8x8 grayscale images, but this model makes {config.in_channels}-channel"
            f" {config.sample_size} images; pass --train_data_dir or --dataset_name."
        )
    return images[: args.max_images]


# --------------------------------------------------------------------------------------------------------------------
# The handler
# --------------------------------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    from .._variance import with_variance_type
    from ..images import image_grid
    from ..pipeline_ddpm_posterior import DDPMPosteriorPipeline
    from ..sampling import generate_samples, inference_steps
    from .results import write_eval_results

    metrics = list(dict.fromkeys(args.metric))  # unique, in the order given
    if args.bootstrap == 1:
        raise UsageError("--bootstrap must be 0 (none) or at least 2 resamples, got 1.")
    if args.output_dir is not None:
        check_output_dir(args.output_dir)
    uses_digits(args)
    device = resolve_device(args.device)

    # 1. Feature extractors first: a missing Inception or DINOv2 model fails before any sampling
    extractors = _load_extractors(args, metrics, device)

    # 2. The model, with the variance override, and what it is checked against
    pipeline = DDPMPosteriorPipeline.from_pretrained(args.pretrained_model_name_or_path, revision=args.revision)
    pipeline = with_variance_type(pipeline, args.variance_type).to(device)
    if "fd-digits" in metrics and not is_digits_model(pipeline.unet.config):
        config = pipeline.unet.config
        raise UsageError(
            f"--metric fd-digits scores 8x8 grayscale digits, but this model makes {config.in_channels}-channel"
            f" {config.sample_size} images; use fd-dinov2 or fid."
        )
    steps = inference_steps(pipeline, args.num_inference_steps, default=pipeline.scheduler.config.num_train_timesteps)
    needs_dataset = any(metric != "fd-digits" for metric in metrics)  # bpd, and the references of fid and fd-dinov2
    images = load_dataset_images(args, pipeline) if needs_dataset else None

    # 3. The metrics, each as its eval_results.json entry
    samples = None
    if any(metric != "bpd" for metric in metrics):  # the Frechet metrics score samples
        output = generate_samples(pipeline, args.num_samples, steps, batch_size=args.batch_size, seed=args.seed)
        samples = output.images  # [N x C x H x W] in [0, 1]
    results = {
        METRIC_KEYS[metric]: _result(metric, args, pipeline, steps, images, samples, extractors) for metric in metrics
    }

    # 4. Report
    print(format_table(results))
    output_dir = results_folder(args.pretrained_model_name_or_path, args.output_dir)
    print(f"wrote {write_eval_results(output_dir, results)}")
    if samples is not None:
        path = os.path.join(output_dir, SAMPLES_FILE)
        image_grid(samples[:64].permute(0, 2, 3, 1).numpy(), scale=4, padding=4).save(path)
        print(f"wrote {path}")
    return 0


def _load_extractors(args, metrics, device) -> dict:
    from .frechet import Dinov2Features, InceptionFID

    extractors = {}
    if "fid" in metrics:
        extractors["fid"] = InceptionFID(args.inception_weights, device, args.batch_size)
    if "fd-dinov2" in metrics:
        extractors["fd-dinov2"] = Dinov2Features(args.dinov2_model, device, batch_size=args.batch_size)
    return extractors


def _result(metric: str, args, pipeline, steps: int, images, samples, extractors: dict) -> dict:
    """Compute one metric; its eval_results.json entry: the value, its standard error and how it was measured."""
    from . import metrics as quality
    from .bpd import dataset_bits_per_dim

    if args.train_data_dir is not None:
        dataset = {"dataset": os.path.abspath(args.train_data_dir)}
    else:
        dataset = {"dataset": args.dataset_name or args.dataset, "split": args.split}
    settings = {"seed": args.seed, "variance_type": pipeline.scheduler.config.variance_type}
    if metric == "bpd":
        summary = dataset_bits_per_dim(
            pipeline,
            images,
            seed=args.seed,
            batch_size=args.batch_size,
            num_timesteps=args.num_timesteps,
            clip_denoised=args.clip_denoised,
        ).summary()
        return {
            "value": summary.pop("bits_per_dim"),
            **summary,
            **dataset,
            **settings,
            "clip_denoised": args.clip_denoised,
        }
    if metric == "fd-digits":
        result, dataset = quality.fd_digits(samples, args.reference, bootstrap=args.bootstrap, seed=args.seed), {}
    elif metric == "fd-dinov2":
        result, dataset["model"] = quality.fd_dinov2(samples, images, extractors[metric]), args.dinov2_model
    else:
        result = quality.fid(samples, images, extractors[metric])
    return {**result, **dataset, "num_inference_steps": steps, **settings}


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


def results_folder(name_or_path: str, output_dir: str | None) -> str:
    """--output_dir, else the model folder, else outputs/eval/OWNER--NAME for a Hub repo."""
    if output_dir is not None:
        return output_dir
    if os.path.isdir(name_or_path):
        return name_or_path
    return os.path.join("outputs", "eval", name_or_path.replace("/", "--"))
