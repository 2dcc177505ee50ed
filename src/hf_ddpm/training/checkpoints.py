# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Crash-safe training checkpoints on top of `accelerator.save_state`.

A checkpoint is written into a hidden temporary folder, its files are fsynced, a manifest of their sizes is written
last, and only then is the folder renamed to `checkpoint-<step>`. A kill at any moment leaves either the previous
checkpoints untouched or a leftover temporary folder, which `latest` ignores (and the next save removes). A
checkpoint whose files no longer match its manifest (truncated by a copy, a full disk...) is skipped with a warning.
"""

import json
import logging
import os
import re
import shutil

from ..cli import UsageError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
MANIFEST_NAME = "checkpoint.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: int | None = None) -> str:
    """
    Save the full training state (`accelerator.save_state`: model, optimizer, LR scheduler, RNG states and the
    objects registered for checkpointing) as `output_dir/checkpoint-<step>`, atomically. Call on every process.

    Returns:
        `str`: the checkpoint folder.
    """
    final = checkpoint_path(output_dir, step)
    temp = os.path.join(output_dir, f"{TEMP_PREFIX}{step}")
    if accelerator.is_main_process:
        _remove_temporary_folders(output_dir)
        os.makedirs(temp)
    accelerator.wait_for_everyone()
    accelerator.save_state(temp)  # every process writes its own RNG state file
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_manifest(temp, step)
        _fsync_directory(temp)
        if os.path.isdir(final):  # a re-run of the same step: replace only once the new one is complete
            os.replace(final, temp + ".old")
            os.replace(temp, final)
            shutil.rmtree(temp + ".old")
        else:
            os.replace(temp, final)
        _fsync_directory(output_dir)
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def _write_manifest(folder: str, step: int) -> None:
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            files[name] = os.path.getsize(path)
    manifest = os.path.join(folder, MANIFEST_NAME)
    with open(manifest, "w") as f:
        json.dump({"step": step, "files": files}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows): the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _remove_temporary_folders(output_dir: str) -> None:
    """Leftovers of saves that were killed mid-write."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        if name.startswith(TEMP_PREFIX):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def checkpoint_problem(folder: str) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    manifest = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return f"{MANIFEST_NAME} is missing (not written by hf_ddpm, or not finished)"
    try:
        with open(manifest) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST_NAME} is unreadable ({error})"
    for name, size in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes instead of {size}"
    return None


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """The `checkpoint-<step>` folders of `output_dir`, complete or not, by ascending step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    """The complete checkpoint with the highest step; incomplete ones are skipped with a warning."""
    for _step, folder in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning(f"Skipping incomplete checkpoint {folder}: {problem}.")
    return None


def prune_checkpoints(output_dir: str, total_limit: int) -> list[str]:
    """Delete the oldest checkpoints so that at most `total_limit` remain; returns the deleted folders."""
    checkpoints = list_checkpoints(output_dir)
    removed = [folder for _, folder in checkpoints[: max(0, len(checkpoints) - total_limit)]]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def resolve_resume_checkpoint(spec: str | None, output_dir: str) -> str | None:
    """
    The checkpoint folder that `--resume_from_checkpoint` names: `latest` (None when `output_dir` has none), a folder
    (checked), or `hub:REPO_ID[@REVISION]` (downloaded by `hf_ddpm.hub.download_checkpoint`).
    """
    if spec is None:
        return None
    if spec == "latest":
        return latest_checkpoint(output_dir)
    if spec.startswith("hub:"):
        from ..hub import download_checkpoint

        folder = download_checkpoint(spec)
    else:
        folder = spec
    problem = checkpoint_problem(folder) if os.path.isdir(folder) else "it is not a folder"
    if problem is not None:
        raise UsageError(f"--resume_from_checkpoint {spec}: not a complete checkpoint: {problem}.")
    return folder
