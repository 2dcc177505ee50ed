# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training checkpoints on the "checkpoints" branch: `push_checkpoint` and `download_checkpoint`."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from pathlib import Path

from .._errors import UsageError
from ._commit import check_branch, check_repo_id, download, push_files
from ._scan import PICKLE_PATTERNS, check_files, never_sent, read_files, walk

logger = logging.getLogger(__name__)


CHECKPOINT_BRANCH = "checkpoints"
# save_state always writes the RNG states of each process: the marker of a checkpoint folder. Everything else in the
# folder goes with it (model.safetensors, optimizer.bin, scheduler.bin, custom_checkpoint_0.pkl, scaler.pt, a
# manifest...: what accelerate writes changes with its version and features) except hidden files and caches.
CHECKPOINT_MARKER = "random_states_*.pkl"


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    *,
    branch: str = CHECKPOINT_BRANCH,
    path_in_repo: str | None = None,
    private: bool = False,
) -> str:
    """
    Upload an accelerate checkpoint folder (what `accelerator.save_state` wrote) to a branch of a model repo, in one
    commit, and return the commit sha.

    The checkpoint goes to the branch `branch` (created from `main` if new), under `path_in_repo` (default: the
    folder's name, e.g. "checkpoint-500"), so that the pickles it holds never reach the pipeline on `main`.

    Args:
        checkpoint_dir (`str` or `os.PathLike`): e.g. "outputs/ddpm/checkpoint-500".
        repo_id (`str`): the model repo (created if needed).
        branch (`str`, defaults to `"checkpoints"`): the branch that collects checkpoints.
        path_in_repo (`str`, *optional*): the folder in the repo.
        private (`bool`, defaults to `False`): create the repo private.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"{checkpoint_dir} is not a folder (expected an accelerate checkpoint).")
    check_repo_id(repo_id)
    check_branch(branch)
    paths = [path for path in walk(checkpoint_dir) if not never_sent(path)]
    if not any(fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], CHECKPOINT_MARKER) for path in paths):
        raise FileNotFoundError(
            f"{checkpoint_dir} is not an accelerate checkpoint: accelerator.save_state writes random_states_0.pkl."
        )
    prefix = (checkpoint_dir.resolve().name if path_in_repo is None else path_in_repo).strip("/")
    if not prefix:
        raise UsageError("`path_in_repo` must name a folder (e.g. 'checkpoint-500'): a branch holds many checkpoints.")
    files = read_files(checkpoint_dir, paths)
    check_files(checkpoint_dir, files)
    files = {f"{prefix}/{path}": data for path, data in files.items()}
    return push_files(repo_id, files, message=f"Upload {prefix}", branch=branch, private=private)


def download_checkpoint(spec: str, *, path_in_repo: str | None = None) -> str:
    """
    Download an accelerate checkpoint pushed by `push_checkpoint` and return its local folder, for
    `accelerator.load_state(folder)`.

    Loading that folder unpickles files from the repo (accelerate loads `custom_checkpoint_*.pkl` with
    `weights_only=False`, which can run code): only resume from repos you trust. Naming the repo is the opt-in; the
    pickles fetched and the exact commit are logged.

    Args:
        spec (`str`): "REPO_ID[@REVISION]" (what follows "hub:" in `--resume_from_checkpoint`); the revision defaults
            to the "checkpoints" branch and may be a branch, tag or commit sha.
        path_in_repo (`str`, *optional*): the checkpoint folder in the repo; when `None`, the "checkpoint-N" folder of
            the revision with the highest N.
    """
    repo_id, at, revision = spec.removeprefix("hub:").partition("@")
    check_repo_id(repo_id)
    if at and not revision:
        raise UsageError(f"`spec` {spec!r} has an empty revision after '@': use REPO_ID or REPO_ID@REVISION.")
    revision = revision or CHECKPOINT_BRANCH
    # the markers (small) of every checkpoint of the revision: where they are, and the commit they come from
    markers = Path(download(repo_id, revision=revision, allow_patterns=[f"*/{CHECKPOINT_MARKER}"]))
    prefix = (_latest_checkpoint(markers, spec) if path_in_repo is None else path_in_repo).strip("/")
    if not prefix:
        raise UsageError("`path_in_repo` must name the checkpoint's folder in the repo, e.g. 'checkpoint-500'.")
    # fnmatch's "*" spans folders: "checkpoint-500/*" is the whole checkpoint, subfolders included
    folder = Path(download(repo_id, revision=markers.name, allow_patterns=[f"{prefix}/*"]), prefix)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"No checkpoint files under {prefix!r} in {repo_id}@{revision}.")
    pickles = sorted(path for path in walk(folder) if any(fnmatch.fnmatch(path, p) for p in PICKLE_PATTERNS))
    logger.warning(
        "Checkpoint %s@%s (commit %s): accelerate will unpickle %s; resume only from repos you trust.",
        repo_id,
        revision,
        markers.name,
        ", ".join(pickles) or "no pickle files",
    )
    return str(folder)


def _latest_checkpoint(snapshot: Path, spec: str) -> str:
    """The checkpoint folder of `snapshot` whose name ends with the highest step number ("checkpoint-N")."""
    folders = {marker.parent.relative_to(snapshot).as_posix() for marker in snapshot.glob(f"*/**/{CHECKPOINT_MARKER}")}
    if not folders:
        raise FileNotFoundError(f"{spec} holds no accelerate checkpoint (no folder with random_states_0.pkl).")
    steps = {folder: int(match.group(1)) for folder in folders if (match := re.search(r"(\d+)$", folder))}
    if not steps and len(folders) > 1:
        raise UsageError(f"{spec} holds several checkpoints ({', '.join(sorted(folders))}): pass `path_in_repo`.")
    return max(steps, key=steps.get) if steps else folders.pop()
