# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub side of hf-ddpm: push and pull pipelines, training checkpoints and Spaces; model cards.

What goes where, and why:

* A pipeline repo (`push_pipeline`, `pull`) holds what loading needs (model_index.json, unet/ config and safetensors,
  scheduler/ config), the self-contained *.py modules for `trust_remote_code=True`, README.md, sample PNGs and
  metrics JSON. Never pickles (*.bin, *.pkl, ...), never a token: files are picked by an allow-list, hidden and
  credential files are never picked, and every file about to be sent, text or binary, is scanned for every token of
  this machine and anything shaped like a Hub token before anything is sent. Every safetensors file is opened with
  safetensors, which checks that its tensors cover it exactly, so a truncated weight file is refused, not published.
* A push is ONE commit created against the branch head read just before (`parent_commit`): a push that fails leaves
  the repo at its previous commit, and a push that races another writer is refused instead of overwriting it.
  Transient failures (5xx, dropped connections) are retried with backoff; a commit is retried only after checking
  that the branch head has not moved, so a commit whose answer was lost is recognised instead of made twice.
* Training checkpoints (`push_checkpoint`, `download_checkpoint`) go to a separate branch ("checkpoints"), because
  accelerate's state files (optimizer.bin, scheduler.bin, random_states_*.pkl, custom_checkpoint_*.pkl) are pickles
  by design: the main branch stays pickle-free. Resuming from a Hub checkpoint unpickles files from that repo
  (`custom_checkpoint_*.pkl` with `weights_only=False`, which can run code): naming the repo in
  `--resume_from_checkpoint hub:REPO_ID[@REV]` is the explicit opt-in, and `download_checkpoint` logs which pickles
  it fetched and the exact commit. Only resume from repos you trust, as you would only `torch.load` files you trust.

huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE` and the cache location at import; `HfApi()` is created inside
each function, never at import, so that tests (and users) can point the library at another endpoint.

The modules:

    pipelines.py    push_pipeline, pull, check_pipeline_folder: pipeline repos
    checkpoints.py  push_checkpoint, download_checkpoint: training checkpoints on their own branch
    spaces.py       push_space: Gradio Spaces
    cards.py        save_model_card: the model card
    _scan.py        what may be sent: file selection, the token scan of every file, complete safetensors files
    _commit.py      the one-commit push and its retries, downloads of one resolved commit, Hub error messages
    cli.py          `hf-ddpm push | pull | card | push-space`
"""

from .._lazy import lazy_exports

# Public names and their modules, imported on first use: `hf-ddpm --help` imports `hf_ddpm.hub` for its subcommands
# and must not pay for torch (the pipeline and card modules import it).
_EXPORTS = {
    "HubPushError": "_commit",
    "RETRY_DELAYS": "_commit",
    "TRANSIENT_STATUS_CODES": "_commit",
    "describe_hub_error": "_commit",
    "CREDENTIAL_FILES": "_scan",
    "PICKLE_PATTERNS": "_scan",
    "SCAN_BLOCK_BYTES": "_scan",
    "SCAN_OVERLAP_BYTES": "_scan",
    "TOKEN_BYTES_RE": "_scan",
    "TOKEN_RE": "_scan",
    "GENERATED_MARKER": "cards",
    "LICENSE_DEFAULT": "cards",
    "SECRET_KEY_RE": "cards",
    "TASK": "cards",
    "TEMPLATE_PATH": "cards",
    "save_model_card": "cards",
    "CHECKPOINT_BRANCH": "checkpoints",
    "CHECKPOINT_MARKER": "checkpoints",
    "download_checkpoint": "checkpoints",
    "push_checkpoint": "checkpoints",
    "register": "cli",
    "PULL_PATTERNS": "pipelines",
    "PUSH_PATTERNS": "pipelines",
    "check_pipeline_folder": "pipelines",
    "pull": "pipelines",
    "push_pipeline": "pipelines",
    "SPACE_IGNORED_FILES": "spaces",
    "SPACE_IGNORED_FOLDERS": "spaces",
    "push_space": "spaces",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CHECKPOINT_BRANCH",
    "HubPushError",
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
