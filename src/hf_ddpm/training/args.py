# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The training flags, grouped by concern, and the checks between them.

Flag names follow diffusers' train_unconditional.py where it has the flag. The flags that depend on the model size
(`default=None`, "default: preset" in their help) take their defaults from `presets.MODEL_PRESETS`.
"""

import argparse
import math
import os
import sys
from collections.abc import Sequence

from .._choices import (
    LEARNED_VARIANCE_TYPES,
    LOSS_TYPES,
    LR_SCHEDULERS,
    PREDICTION_TYPES,
    TIMESTEP_SAMPLERS,
    VARIANCE_TYPES,
    checked,
)
from .._devices import DEVICES, resolve_device
from .._errors import UsageError
from ..files import check_output_dir
from ..hub import CHECKPOINT_BRANCH
from . import presets

MIXED_PRECISIONS = ("no", "fp16", "bf16")
RUN_FILES = (
    "model_index.json",
    "training_args.json",
    "logs",
    ".hf-ddpm-train.lock",
)  # a folder holding one of these is a run's


AT_LEAST_1 = checked(int, "at least 1", lambda value: value >= 1)
AT_LEAST_0 = checked(int, "at least 0", lambda value: value >= 0)
POSITIVE_FLOAT = checked(float, "a positive number", lambda value: 0 < value < math.inf)
AT_LEAST_0_FLOAT = checked(float, "a number >= 0", lambda value: 0 <= value < math.inf)
AT_LEAST_2 = checked(int, "at least 2 (the decoder and one KL term)", lambda value: value >= 2)
FRACTION = checked(float, "in (0, 1)", lambda value: 0 < value < 1)
FOLDER = checked(str, "a folder", os.path.isdir)
TOKEN = checked(str, "a token, not empty", str.strip)
RESUME_SPEC = checked(
    str,
    "'latest', a checkpoint folder or hub:REPO_ID",
    lambda spec: spec == "latest" or spec.startswith("hub:") or os.path.isdir(spec),
)


def _is_side_branch(revision: str) -> bool:
    return revision not in ("", "main") and not revision.startswith("refs/")


EXAMPLE = """Example:
  accelerate launch train.py --max_train_steps 2000 --output_dir outputs/ddpm-digits
  hf-ddpm train --dataset_name uoft-cs/cifar10 --model_preset cifar10 --mixed_precision bf16"""


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every training flag to `parser`, grouped by concern (used by train.py and `hf-ddpm train`)."""
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--dataset_name", help="A Hub dataset or local dataset folder (default: the 8x8 digits).")
    data.add_argument("--dataset_config_name", "--dataset_config", help="The dataset's config, if it has several.")
    source.add_argument("--train_data_dir", type=FOLDER, help="A folder of images (imagefolder), not --dataset_name.")
    data.add_argument("--cache_dir", help="Where datasets are cached.")
    data.add_argument("--image_column", help="The column holding the images (default: detected).")
    data.add_argument("--resolution", type=AT_LEAST_1, help="Train on RES x RES images (default: preset).")
    data.add_argument("--channels", type=int, choices=(1, 3, 4), help="1 gray, 3 RGB, 4 RGBA (default: preset).")
    data.add_argument("--center_crop", action="store_true", help="Center-crop after resizing (default: random crop).")
    data.add_argument("--random_flip", action="store_true", help="Randomly flip training images horizontally.")
    data.add_argument("--heldout_fraction", type=FRACTION, default=0.1, help="Fraction held out (no test split).")
    data.add_argument("--max_train_samples", type=AT_LEAST_1, help="Use at most this many training images.")
    data.add_argument("--dataloader_num_workers", type=AT_LEAST_0, default=0, help="Data loading subprocesses.")
    data.add_argument(
        "--streaming",
        action="store_true",
        help="Read --dataset_name or --train_data_dir as a stream (nothing downloaded or cached first), for datasets"
        " larger than the disk. Needs --max_train_steps; bits/dim uses the first --bpd_num_images of the"
        " test/validation split (skipped without one).",
    )
    data.add_argument("--shuffle_buffer_size", type=AT_LEAST_1, default=1000, help="The stream's shuffle buffer.")

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_preset",
        choices=tuple(presets.MODEL_PRESETS),
        default="digits",
        help="UNet architecture and size-dependent defaults: digits (8x8 CPU model), tiny (smoke tests), cifar10"
        " (Ho et al., 35.7M), 64 (64x64).",
    )

    diffusion = parser.add_argument_group("diffusion")
    diffusion.add_argument("--ddpm_num_steps", type=AT_LEAST_1, default=1000, help="Diffusion steps T of training.")
    diffusion.add_argument(
        "--beta_schedule",
        "--ddpm_beta_schedule",
        choices=("linear", "squaredcos_cap_v2", "cosine"),
        default="squaredcos_cap_v2",
        help="Noise schedule: linear (Ho et al.) or squaredcos_cap_v2 (cosine, Nichol & Dhariwal; alias: cosine).",
    )
    diffusion.add_argument(
        "--variance_type",
        choices=VARIANCE_TYPES,
        default="learned_range",
        help="Reverse-process variance: fixed (small: posterior, large: beta) or learned (learned_range: eq. 15).",
    )
    diffusion.add_argument("--prediction_type", choices=PREDICTION_TYPES, default="epsilon", help="eps, x_0 or v.")
    diffusion.add_argument(
        "--ddpm_num_inference_steps", type=AT_LEAST_1, default=100, help="Sampling steps of the grids."
    )

    objective = parser.add_argument_group("objective")
    objective.add_argument(
        "--loss",
        choices=LOSS_TYPES,
        default="hybrid",
        help="simple: MSE of the prediction (L_simple); hybrid: L_simple + lambda L_vlb; vlb: the bound L_vlb.",
    )
    objective.add_argument("--vlb_weight", type=POSITIVE_FLOAT, default=0.001, help="lambda of the hybrid loss.")
    objective.add_argument(
        "--timestep_sampler",
        choices=TIMESTEP_SAMPLERS,
        default="auto",
        help="How t is drawn: uniform, or loss-second-moment importance sampling (auto: the latter for --loss vlb).",
    )

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--train_batch_size", type=AT_LEAST_1, help="Batch size per device (default: preset).")
    optim.add_argument("--num_epochs", type=AT_LEAST_1, help="Epochs, when --max_train_steps is not given.")
    optim.add_argument("--max_train_steps", type=AT_LEAST_1, help="Optimizer steps (default: preset).")
    optim.add_argument("--gradient_accumulation_steps", type=AT_LEAST_1, default=1, help="Batches per optimizer step.")
    optim.add_argument("--learning_rate", type=POSITIVE_FLOAT, help="Peak learning rate (default: preset).")
    optim.add_argument("--lr_scheduler", choices=LR_SCHEDULERS, default="cosine", help="Schedule after the warmup.")
    optim.add_argument("--lr_warmup_steps", type=AT_LEAST_0, help="Linear warmup steps (default: preset).")
    optim.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW beta1.")
    optim.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW beta2.")
    optim.add_argument("--adam_weight_decay", type=float, default=0.0, help="AdamW decoupled weight decay.")
    optim.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    optim.add_argument("--max_grad_norm", type=AT_LEAST_0_FLOAT, default=1.0, help="Clip the gradient norm (0: off).")
    optim.add_argument("--seed", type=AT_LEAST_0, default=0, help="Seed of weights, data order and noise.")

    ema = parser.add_argument_group("EMA")
    ema.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="Save and sample the EMA.")
    ema.add_argument("--ema_decay", "--ema_max_decay", type=FRACTION, help="Largest EMA decay (default: preset).")
    ema.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warmup: 1 - (1 + step / inv_gamma)^-power.")
    ema.add_argument("--ema_power", type=float, default=3 / 4, help="EMA warmup power (3/4 suits short runs).")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA, else MPS, else the CPU.")
    hardware.add_argument("--mixed_precision", choices=MIXED_PRECISIONS, help="Default: accelerate's config.")
    speed = parser.add_argument_group("speed", "Off unless they helped in benchmarks/train_throughput.py.")
    speed.add_argument("--torch_compile", action="store_true", help="Compile the UNet (torch.compile, in place).")
    speed.add_argument("--channels_last", action="store_true", help="Channels-last memory layout (GPUs).")

    saving = parser.add_argument_group("checkpoints")
    saving.add_argument("--output_dir", help="Where everything is written (default: outputs/ddpm-PRESET).")
    saving.add_argument("--overwrite_output_dir", action="store_true", help="Delete an earlier run's checkpoints.")
    saving.add_argument("--checkpointing_steps", type=AT_LEAST_0, help="Save every N steps (default: preset).")
    saving.add_argument("--checkpoints_total_limit", type=AT_LEAST_1, help="Keep the newest N checkpoints.")
    saving.add_argument(
        "--resume_from_checkpoint",
        type=RESUME_SPEC,
        help="Continue a run: 'latest' (newest good checkpoint in --output_dir; a new run if it has none), a"
        " checkpoint folder, or hub:REPO_ID[@REVISION] (default: the newest of the 'checkpoints' branch).",
    )
    saving.add_argument(
        "--allow_inexact_resume",
        action="store_true",
        help="Resume from a checkpoint whose RNG state files are damaged, with a warning: the run then no longer"
        " repeats an uninterrupted one.",
    )

    logs = parser.add_argument_group("logging and evaluation")
    logs.add_argument("--logger", choices=("tensorboard", "wandb", "none"), default="tensorboard", help="The tracker.")
    logs.add_argument("--logging_dir", default="logs", help="Tracker folder, relative to --output_dir.")
    logs.add_argument("--logging_steps", type=AT_LEAST_1, default=10, help="Log averaged losses every N steps.")
    logs.add_argument("--save_images_steps", type=AT_LEAST_0, help="A sample grid every N steps (default: preset).")
    logs.add_argument("--eval_batch_size", type=AT_LEAST_1, default=64, help="Images in each sample grid.")
    logs.add_argument("--bpd_steps", type=AT_LEAST_0, help="Held-out bits/dim every N steps (default: preset).")
    logs.add_argument("--bpd_num_images", type=AT_LEAST_1, default=256, help="Held-out images for bits/dim (at most).")
    logs.add_argument("--bpd_num_timesteps", type=AT_LEAST_2, default=50, help="Timesteps of the bound (strided).")

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Push the trained pipeline to the Hub (main).")
    hub.add_argument("--hub_model_id", help="The Hub repo to push to (default: the output folder name).")
    hub.add_argument(
        "--push_checkpoints_to_hub",
        action="store_true",
        help="Push every checkpoint, one commit each, to the --hub_checkpoint_revision branch of --hub_model_id, so"
        " that --resume_from_checkpoint hub:REPO_ID resumes on another machine.",
    )
    hub.add_argument(
        "--hub_checkpoint_revision",
        default=CHECKPOINT_BRANCH,
        type=checked(str, "a branch other than main (checkpoints hold pickles)", _is_side_branch),
        help="The branch of the checkpoints.",
    )
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repo private.")
    hub.add_argument("--hub_token", type=TOKEN, help="Default: HF_TOKEN or `hf auth login`. Never written.")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=os.path.basename(sys.argv[0]) or "train.py",
        description="Train a DDPM / Improved DDPM with Accelerate (one CPU to many GPUs).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return add_training_arguments(parser)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the training flags; bad values exit with code 2 and a message naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return finalize_args(args)
    except UsageError as error:
        parser.error(str(error))


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the preset's defaults and check the flags that depend on each other (`UsageError` naming the flag)."""
    for name, value in presets.MODEL_PRESETS[args.model_preset]["defaults"].items():
        if getattr(args, name) is None and not (name == "max_train_steps" and args.num_epochs):  # epochs: set later
            setattr(args, name, value)
    args.beta_schedule = {"cosine": "squaredcos_cap_v2"}.get(args.beta_schedule, args.beta_schedule)
    args.output_dir = args.output_dir or os.path.join("outputs", f"ddpm-{args.model_preset}")
    _check_output_dir(args)
    if args.timestep_sampler == "auto":
        args.timestep_sampler = "loss-second-moment" if args.loss == "vlb" else "uniform"
    args.mixed_precision = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    problem = _flag_problem(args)
    if problem:
        raise UsageError(problem)
    return args


def _check_output_dir(args: argparse.Namespace) -> None:
    """A run writes its card (README.md), weights and logs into --output_dir: never the current, home or data folder,
    nor a folder of other files (unless --overwrite_output_dir says to write into it anyway)."""
    data = [args.train_data_dir] if args.train_data_dir else []
    check_output_dir(args.output_dir, inputs=data)
    output_dir = os.path.realpath(args.output_dir)
    if data and os.path.commonpath([output_dir, os.path.realpath(data[0])]) == os.path.realpath(data[0]):
        raise UsageError(f"--output_dir {args.output_dir} lies in --train_data_dir: its images would become data.")
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    if (
        names
        and not args.overwrite_output_dir
        and not any(name in RUN_FILES or name.startswith("checkpoint-") for name in names)
    ):
        raise UsageError(
            f"--output_dir {args.output_dir} holds files of its own, not a run's: pick a new folder, or pass"
            " --overwrite_output_dir to write the run into it."
        )


def _flag_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of flags, in one line naming them; None when nothing is."""
    factor = 2 ** (len(presets.MODEL_PRESETS[args.model_preset]["unet"]["block_out_channels"]) - 1)
    learned = args.variance_type in LEARNED_VARIANCE_TYPES
    if args.ddpm_num_inference_steps > args.ddpm_num_steps:
        return (
            f"--ddpm_num_inference_steps ({args.ddpm_num_inference_steps}) cannot exceed --ddpm_num_steps"
            f" ({args.ddpm_num_steps})."
        )
    if args.resolution % factor:
        return (
            f"--resolution {args.resolution} is not divisible by {factor}: the {args.model_preset} UNet halves the"
            f" image {int(math.log2(factor))} times (use a multiple of {factor})."
        )
    if args.loss != "simple" and not learned:
        return (
            f"--loss {args.loss} trains the variance, so it needs --variance_type learned_range or learned"
            f" (got {args.variance_type}); use --loss simple with a fixed variance."
        )
    if args.loss == "simple" and learned:
        return (
            f"--variance_type {args.variance_type} is only trained by --loss hybrid or vlb (L_simple gives the"
            " variance no gradient); use a fixed variance type with --loss simple."
        )
    if args.streaming and args.dataset_name is None and args.train_data_dir is None:
        return "--streaming reads --dataset_name or --train_data_dir; the built-in digits are held in memory."
    if args.streaming and args.num_epochs is not None:
        return "--num_epochs needs the dataset's length, unknown for a stream: use --max_train_steps with --streaming."
    if args.streaming and args.dataloader_num_workers > 1:
        return (
            "--streaming reads the stream in order in one process: --dataloader_num_workers must be 0 or 1, got"
            f" {args.dataloader_num_workers}."
        )
    if args.push_checkpoints_to_hub and not args.checkpointing_steps:
        return "--push_checkpoints_to_hub needs checkpoints: pass --checkpointing_steps N (at least 1)."
    if args.hub_token is not None and args.logger == "wandb":  # as diffusers' scripts: wandb records the command line
        return "--hub_token cannot be used with --logger wandb (it would record the token): use `hf auth login`."
    if args.mixed_precision not in MIXED_PRECISIONS:  # the default comes from accelerate's config
        return f"--mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {args.mixed_precision!r}."
    if args.mixed_precision == "fp16" and resolve_device(args.device).type == "cpu":
        return "--mixed_precision fp16 needs a GPU (float16 autocast with loss scaling); on the CPU use bf16 or no."
    if args.logger == "wandb":
        from accelerate.utils import is_wandb_available

        if not is_wandb_available():
            return "--logger wandb needs the wandb package (pip install wandb); or use --logger tensorboard."
    return None
