# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training checkpoints on their own branch, so that their pickles never reach `main`: `push_checkpoint` and
`download_checkpoint`."""

import fnmatch
import logging
import os
import re
from pathlib import Path

from .._errors import UsageError
from ._commit import download, push_files
from ._scan import PICKLE_PATTERNS, matches, never_sent, scanned_files, walk

logger = logging.getLogger(__name__)

CHECKPOINT_BRANCH = "checkpoints"
# accelerator.save_state always writes the RNG states of each process: the marker of a checkpoint folder. The rest
# of the folder goes with it, whatever accelerate wrote, except hidden files and caches.
CHECKPOINT_MARKER = "random_states_*.pkl"


def push_checkpoint(
    checkpoint_dir: str | os.PathLike, repo_id: str, *, branch: str = CHECKPOINT_BRANCH, private: bool = False
) -> str:
    """
    Upload an accelerate checkpoint folder (what `accelerator.save_state` wrote) as `<its name>/` on the branch
    `branch` of a model repo (created from `main` if new), in one commit, and return the commit sha.
    """
    checkpoint_dir = Path(checkpoint_dir)
    paths = [path for path in walk(checkpoint_dir) if not never_sent(path)]
    if not any(matches(path, [CHECKPOINT_MARKER]) for path in paths):
        raise FileNotFoundError(f"{checkpoint_dir} is not an accelerate checkpoint (no random_states_0.pkl).")
    name = checkpoint_dir.resolve().name
    files = {f"{name}/{path}": data for path, data in scanned_files(checkpoint_dir, paths).items()}
    return push_files(repo_id, files, message=f"Upload {name}", branch=branch, private=private)


def download_checkpoint(spec: str) -> str:
    """
    Download the newest checkpoint-N folder of a revision and return its local folder, for `accelerator.load_state`,
    which unpickles its files (they can run code): naming the repo is the opt-in; the pickles and commit are logged.

    Args:
        spec (`str`): "[hub:]REPO_ID[@REVISION]", the revision a branch (default: "checkpoints"), tag or commit sha.
    """
    repo_id, at, revision = spec.removeprefix("hub:").partition("@")
    if at and not revision:
        raise UsageError(f"`spec` {spec!r} has an empty revision after '@': use REPO_ID or REPO_ID@REVISION.")
    revision = revision or CHECKPOINT_BRANCH
    # the (small) markers of every checkpoint of the revision: where they are, and the commit they come from
    markers = Path(download(repo_id, revision=revision, allow_patterns=[f"*/{CHECKPOINT_MARKER}"]))
    names = [marker.parent.name for marker in markers.glob(f"*/{CHECKPOINT_MARKER}")]
    steps = {int(match.group(1)): name for name in names if (match := re.fullmatch(r"checkpoint-(\d+)", name))}
    if not steps:
        raise FileNotFoundError(f"{spec} holds no checkpoint-N folder with random_states_0.pkl.")
    latest = steps[max(steps)]
    # fnmatch's "*" spans folders: "checkpoint-500/*" is the whole checkpoint, subfolders included
    folder = Path(download(repo_id, revision=markers.name, allow_patterns=[f"{latest}/*"]), latest)
    pickles = [path for path in walk(folder) if any(fnmatch.fnmatch(path, pattern) for pattern in PICKLE_PATTERNS)]
    logger.warning(
        f"Checkpoint {repo_id}@{revision} (commit {markers.name}): accelerate will unpickle "
        f"{', '.join(pickles) or 'no pickle files'}; resume only from repos you trust."
    )
    return str(folder)
