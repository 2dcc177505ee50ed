# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub side of hf-ddpm: push and pull pipelines, training checkpoints and Spaces; model cards.

What goes where, and why:

* A pipeline repo (`push_pipeline`, `pull`) holds what loading needs (model_index.json, unet/ config and safetensors,
  scheduler/ config), the self-contained *.py modules for `trust_remote_code=True` (the installed hf_ddpm's, where
  the folder lacks them), README.md, sample PNGs and metrics JSON. Never pickles (*.bin, *.pkl, ...), never a secret:
  files are picked by an allow-list, hidden and credential files are never picked, and every file is read once, its
  bytes checked, and those very bytes sent (see `_scan.py` for the checks). Every safetensors file must load.
* A push is ONE `create_commit` against the branch head read just before (`parent_commit`): a push that fails leaves
  the repo at its previous commit, a push that races another writer is refused instead of overwriting it, and a push
  of unchanged files makes no commit (so retrying a push whose answer was lost makes no second one).
* Training checkpoints (`push_checkpoint`, `download_checkpoint`) go to a separate branch ("checkpoints"), because
  accelerate's state files (optimizer.bin, random_states_*.pkl, custom_checkpoint_*.pkl) are pickles by design: the
  main branch stays pickle-free. Resuming from a Hub checkpoint unpickles its files, which can run code: naming the
  repo in `--resume_from_checkpoint hub:REPO_ID[@REV]` is the opt-in; only resume from repos you trust.
* Downloads are `snapshot_download`: one commit, the huggingface_hub cache, offline from the cache.

huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE` and the cache location at import; `HfApi()` is created inside
each function, never at import, so that tests (and users) can point the library at another endpoint.
"""

from .._lazy import lazy_exports

# Public names and their modules, imported on first use: `hf-ddpm --help` imports `hf_ddpm.hub` for its subcommands
# and must not pay for torch (the pipeline and card modules import it).
_EXPORTS = {
    "GENERATED_MARKER": "cards",
    "TEMPLATE_PATH": "cards",
    "save_model_card": "cards",
    "CHECKPOINT_BRANCH": "checkpoints",
    "download_checkpoint": "checkpoints",
    "push_checkpoint": "checkpoints",
    "describe_hub_error": "cli",
    "register": "cli",
    "check_pipeline_folder": "pipelines",
    "pull": "pipelines",
    "push_pipeline": "pipelines",
    "push_space": "spaces",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CHECKPOINT_BRANCH",
    "check_pipeline_folder",
    "describe_hub_error",
    "download_checkpoint",
    "pull",
    "push_checkpoint",
    "push_pipeline",
    "push_space",
    "register",
    "save_model_card",
]
