# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What a training run sends to the Hub: each checkpoint (`--push_checkpoints_to_hub`) and the final pipeline
(`--push_to_hub`), with the flags of diffusers' train_unconditional.py (`--hub_model_id`, `--hub_token`,
`--hub_private_repo`).

The token of `--hub_token` is handed to huggingface_hub through `HF_TOKEN` for the duration of each Hub call only: the
library and `hf_ddpm.hub` read it from there, and so the secret scans before an upload and the card's redaction look
for that very token. It is never stored in training_args.json, the tracker's hyperparameters or the card
(`public_flags`), nor logged.
"""

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# Flags whose values must never leave the process (files, trackers, model cards, logs).
SECRET_FLAGS = ("hub_token",)


def public_flags(args: argparse.Namespace) -> dict:
    """The flags as a dict, without secrets and without the `hf-ddpm` handler."""
    return {name: value for name, value in vars(args).items() if name not in SECRET_FLAGS and not callable(value)}


@contextlib.contextmanager
def hub_token(token: str | None) -> Iterator[None]:
    """`HF_TOKEN` set to `token` inside the block (unchanged when `token` is None), restored after it."""
    if token is None:
        yield
        return
    previous = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = token
    try:
        yield
    finally:
        if previous is None:
            del os.environ["HF_TOKEN"]
        else:
            os.environ["HF_TOKEN"] = previous


def hub_repo_id(args: argparse.Namespace) -> str:
    """`--hub_model_id`, or the output folder's name (as diffusers' scripts do)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def push_checkpoint_of_run(args: argparse.Namespace, folder: str) -> None:
    """
    Push a checkpoint folder to the `--hub_checkpoint_revision` branch, in one commit. A failed push is logged and
    training goes on: the checkpoint is safe on disk and the next one is pushed whole.
    """
    from ..hub import push_checkpoint

    repo_id = hub_repo_id(args)
    try:
        with hub_token(args.hub_token):
            sha = push_checkpoint(folder, repo_id, branch=args.hub_checkpoint_revision, private=args.hub_private_repo)
    except Exception as error:  # a network or Hub failure must not end a long run
        logger.error(f"Could not push {folder} to {repo_id}@{args.hub_checkpoint_revision}: {error}")
        return
    logger.info(f"Pushed {os.path.basename(folder)} to {repo_id}@{args.hub_checkpoint_revision} (commit {sha})")


def push_pipeline_of_run(args: argparse.Namespace) -> str:
    """Push the saved pipeline in `--output_dir` to `--hub_model_id` (main); returns the commit sha."""
    from ..hub import push_pipeline

    with hub_token(args.hub_token):
        return push_pipeline(args.output_dir, hub_repo_id(args), private=args.hub_private_repo)
