# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Crash-safe training checkpoints on top of `accelerator.save_state`.

A checkpoint is written into a hidden temporary folder, its files are fsynced, a manifest of their sizes and sha256
hashes is written last, and only then is the folder renamed to `checkpoint-<step>`. A kill at any moment leaves either
the previous checkpoints untouched or a leftover temporary folder, which `latest` ignores (and the next save removes).

A checkpoint whose files no longer match its manifest (truncated by a copy, a flipped bit, a full disk...) is broken:
`latest` resumes from the newest good one and names the broken ones it skipped; when every checkpoint is broken the
run stops instead of starting over. Pruning (`--checkpoints_total_limit`) never deletes a checkpoint newer than the
one a run resumed from unless the run has written that step itself.
"""

import hashlib
import json
import logging
import os
import re
import shutil

from .._errors import UsageError
from ..files import replace_folder

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
MANIFEST_NAME = "checkpoint.json"
RNG_STATE_RE = re.compile(r"^random_states_(\d+)\.pkl$")  # accelerate's RNG state file of each process
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")


def save_checkpoint(
    accelerator,
    output_dir: str,
    step: int,
    total_limit: int | None = None,
    keep: frozenset[int] = frozenset(),
    manifest_extra: dict | None = None,
) -> str:
    """
    Save the full training state (`accelerator.save_state`: model, optimizer, LR scheduler, RNG states and the
    objects registered for checkpointing) as `output_dir/checkpoint-<step>`, atomically. Call on every process.
    `keep`: steps that pruning must not delete; `manifest_extra`: recorded in the manifest (e.g. the model flags).

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
        _write_manifest(temp, step, manifest_extra or {})
        _fsync_directory(temp)
        replace_folder(temp, final)  # a re-run of the same step: replaced only once the new one is complete
        _fsync_directory(output_dir)
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit, keep=keep)
    accelerator.wait_for_everyone()
    return final


def _write_manifest(folder: str, step: int, extra: dict) -> None:
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            files[name] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    manifest = os.path.join(folder, MANIFEST_NAME)
    with open(manifest, "w") as f:
        json.dump({"step": step, **extra, "files": files}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def checkpoint_problems(folder: str) -> dict[str, str]:
    """
    What is wrong with the checkpoint `folder`, by file name ({} for a complete one): a missing or unreadable
    manifest, or a file missing or differing from the size and sha256 hash the manifest recorded.
    """
    manifest = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return {MANIFEST_NAME: "missing (not written by hf_ddpm, or not finished)"}
    try:
        with open(manifest) as f:
            files = json.load(f)["files"]
        files = {name: entry if isinstance(entry, dict) else {"size": entry} for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return {MANIFEST_NAME: f"unreadable ({error})"}
    problems = {name: _file_problem(folder, name, expected) for name, expected in files.items()}
    return {name: problem for name, problem in problems.items() if problem is not None}


def _file_problem(folder: str, name: str, expected: dict) -> str | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) != expected.get("size"):
        return f"{os.path.getsize(path)} bytes instead of {expected.get('size')}"
    if "sha256" in expected and file_sha256(path) != expected["sha256"]:
        return "content differs from its sha256 in the manifest"
    return None


def checkpoint_problem(folder: str, tolerate_rng_states: bool = False) -> str | None:
    """
    Why `folder` is not a good checkpoint (one line naming the files), or None when it is. `tolerate_rng_states`:
    broken RNG state files alone do not count (`--allow_inexact_resume`; the resume then warns that it is not exact).
    """
    problems = checkpoint_problems(folder)
    if tolerate_rng_states:
        problems = {name: problem for name, problem in problems.items() if not RNG_STATE_RE.match(name)}
    return "; ".join(f"{name}: {problem}" for name, problem in problems.items()) or None


def read_manifest(folder: str) -> dict:
    """The manifest of a checkpoint ({} when absent or unreadable)."""
    try:
        with open(os.path.join(folder, MANIFEST_NAME)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


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


def latest_checkpoint(output_dir: str, tolerate_rng_states: bool = False) -> str | None:
    """
    The good checkpoint with the highest step (None when `output_dir` has no checkpoint). Broken checkpoints newer
    than it are named in a warning; when every checkpoint is broken, raises `UsageError` naming each one: resuming
    was asked for, so starting over from step 0 would be wrong.
    """
    broken = []
    for _step, folder in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(folder, tolerate_rng_states)
        if problem is None:
            if broken:
                logger.warning(
                    f"Resuming from {folder}, the newest good checkpoint; skipped the broken newer one(s), kept"
                    f" on disk: {' | '.join(broken)}."
                )
            return folder
        broken.append(f"{folder} ({problem})")
    if broken:
        raise UsageError(
            f"--resume_from_checkpoint latest: every checkpoint in {output_dir} is broken: {' | '.join(broken)}."
            " Resume from a good copy (a folder or hub:REPO_ID), or start over with --overwrite_output_dir."
        )
    return None


def prune_checkpoints(output_dir: str, total_limit: int, keep: frozenset[int] = frozenset()) -> list[str]:
    """
    Delete the oldest checkpoints so that at most `total_limit` remain besides those whose step is in `keep`
    (checkpoints newer than the one a run resumed from, which it has not rewritten); returns the deleted folders.
    """
    checkpoints = [(step, folder) for step, folder in list_checkpoints(output_dir) if step not in keep]
    removed = [folder for _, folder in checkpoints[: max(0, len(checkpoints) - total_limit)]]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def newer_checkpoints(output_dir: str, step: int) -> set[int]:
    """The steps of the checkpoints in `output_dir` after `step` (good or broken)."""
    return {found for found, _ in list_checkpoints(output_dir) if found > step}


def resolve_resume_checkpoint(spec: str | None, output_dir: str, tolerate_rng_states: bool = False) -> str | None:
    """
    The checkpoint folder that `--resume_from_checkpoint` names: `latest` (None when `output_dir` has none), a folder
    (checked), or `hub:REPO_ID[@REVISION]` (downloaded by `hf_ddpm.hub.download_checkpoint`, then checked).
    """
    if spec is None:
        return None
    if spec == "latest":
        return latest_checkpoint(output_dir, tolerate_rng_states)
    if spec.startswith("hub:"):
        from ..hub import download_checkpoint

        folder = download_checkpoint(spec)
    else:
        folder = spec
    problem = checkpoint_problem(folder, tolerate_rng_states) if os.path.isdir(folder) else "it is not a folder"
    if problem is not None:
        raise UsageError(f"--resume_from_checkpoint {spec}: {folder} is broken: {problem}.")
    return folder


def random_state_problem(folder: str, process_index: int, num_processes: int) -> str | None:
    """
    After `accelerator.load_state(folder)`: why this process's RNG state was not restored, or None when it was.

    accelerate swallows any failure to restore the RNG states (logged at INFO): the run then goes on with other
    random numbers than an uninterrupted one. This compares the live torch, numpy and Python generators with the
    file, and the number of RNG state files with the number of processes (the data order depends on it too).
    """
    import random

    import numpy as np
    import torch

    saved_by = len([name for name in os.listdir(folder) if RNG_STATE_RE.match(name)])
    if saved_by != num_processes:
        return f"it was saved by {saved_by} process(es) and is resumed by {num_processes}"
    name = f"random_states_{process_index}.pkl"
    path = os.path.join(folder, name)
    recorded = read_manifest(folder).get("files", {}).get(name)
    damaged = _file_problem(folder, name, recorded) if isinstance(recorded, dict) else None
    if damaged is not None:  # it may still unpickle, into other states than were saved
        return f"{name}: {damaged}"
    try:
        states = torch.load(path, weights_only=False)  # what accelerate itself unpickled a moment ago
        restored = (
            torch.equal(states["torch_manual_seed"], torch.get_rng_state())
            and random.getstate() == states["random_state"]
            and all(
                np.array_equal(a, b) for a, b in zip(np.random.get_state(), states["numpy_random_seed"], strict=True)
            )
        )
    except Exception as error:  # a damaged pickle raises anything
        return f"{os.path.basename(path)} could not be read ({type(error).__name__}: {error})"
    return None if restored else f"{os.path.basename(path)} was not restored"


def model_mismatch(folder: str, model, flags: dict) -> str | None:
    """
    How the model weights of the checkpoint `folder` differ from `model` (missing or unexpected tensors, shapes),
    with the architecture flags the manifest recorded when they differ from `flags`; None when they fit.
    """
    from safetensors import safe_open

    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        return None  # another layout (pickled weights): accelerate's own error applies
    with safe_open(path, framework="pt") as f:
        saved = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    expected = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    differences = [
        f"{key} has shape {saved[key]} in the checkpoint and {expected[key]} in this model"
        for key in sorted(saved.keys() & expected.keys())
        if saved[key] != expected[key]
    ]
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    if missing:
        differences.append(f"{len(missing)} tensor(s) of this model missing from it (first: {missing[0]})")
    if unexpected:
        differences.append(f"{len(unexpected)} tensor(s) this model does not have (first: {unexpected[0]})")
    if not differences:
        return None
    changed = changed_flags(folder, flags)
    saved_with = f"it was saved with {changed}; " if changed else ""
    more = f" and {len(differences) - 1} more difference(s)" if len(differences) > 1 else ""
    return f"{saved_with}{differences[0]}{more}"


def changed_flags(folder: str, flags: dict) -> str | None:
    """The flags of `flags` that the manifest of `folder` recorded with other values ("--name old (this run: new)")."""
    recorded = read_manifest(folder).get("flags", {})
    changes = [
        f"--{name} {recorded[name]} (this run: {value})"
        for name, value in flags.items()
        if name in recorded and recorded[name] != value
    ]
    return ", ".join(changes) or None
