# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub side of hf-ddpm: pipelines, training checkpoints, Spaces, model cards. Light to import
(`hf-ddpm --help` imports it): torch is imported inside the functions that need it."""

from .cards import save_model_card
from .checkpoints import CHECKPOINT_BRANCH, download_checkpoint, push_checkpoint
from .cli import register
from .pipelines import check_pipeline_folder, pull, push_pipeline
from .spaces import push_space

__all__ = [
    "CHECKPOINT_BRANCH",
    "check_pipeline_folder",
    "download_checkpoint",
    "pull",
    "push_checkpoint",
    "push_pipeline",
    "push_space",
    "register",
    "save_model_card",
]
