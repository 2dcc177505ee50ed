# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`hf-ddpm train`: the same flags and loop as `train.py`."""

import argparse

from .args import EXAMPLE, add_training_arguments, finalize_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a DDPM / Improved DDPM (also: accelerate launch train.py)",
        description="Train a DDPM / Improved DDPM with Accelerate. Without flags: the digits on the CPU in minutes."
        " For several processes use `accelerate launch [--multi_gpu --num_processes N] train.py ...`.",
        epilog=EXAMPLE.replace("accelerate launch train.py", "hf-ddpm train"),
    )
    add_training_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .loop import configure_logging, train

    finalize_args(args)  # raises hf_ddpm._errors.UsageError (exit code 2) naming the flag
    configure_logging()
    train(args)
    return 0
