# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Crash-safe training checkpoints on top of `accelerator.save_state`.

A checkpoint is written into a hidden temporary folder, its files are fsynced, a manifest of their sizes and sha256
hashes is written last, and only then is the folder renamed to `checkpoint-<step>`. A kill at any moment leaves either
the previous checkpoints untouched or a leftover temporary folder, which `latest` ignores (and the next save removes).

A checkpoint whose files no longer match its manifest (truncated by a copy, a flipped bit, a full disk...) is broken:
`latest` resumes from the newest good one and names the broken ones it skipped; when every checkpoint is broken the
run stops instead of starting over. Pruning (`--checkpoints_total_limit`) never deletes a checkpoint newer than the
one a run resumed from unless the run has written that step itself, and never what a symlinked checkpoint points to.
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
    accelerator, output_dir: str, step: int, total_limit: int | None = None, keep=frozenset(), flags: dict = None
) -> str:
    """
    Save the full training state (`accelerator.save_state`: model, optimizer, LR scheduler, RNG states and the
    objects registered for checkpointing) as `output_dir/checkpoint-<step>`, atomically. Call on every process.
    `keep`: steps that pruning must not delete; `flags`: the flags recorded in the manifest.

    Returns:
        `str`: the checkpoint folder.
    """
    final = checkpoint_path(output_dir, step)
    temp = os.path.join(output_dir, f"{TEMP_PREFIX}{step}")
    if accelerator.is_main_process:
        for name in os.listdir(output_dir):  # leftovers of saves that were killed mid-write
            if name.startswith(TEMP_PREFIX):
                remove_folder(os.path.join(output_dir, name))
        os.makedirs(temp)
    accelerator.wait_for_everyone()
    accelerator.save_state(temp)  # every process writes its own RNG state file
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_manifest(temp, {"step": step, "flags": flags or {}})
        _fsync_directory(temp)
        replace_folder(temp, final)  # a re-run of the same step: replaced only once the new one is complete
        _fsync_directory(output_dir)
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit, keep=keep)
    accelerator.wait_for_everyone()
    return final


def _write_manifest(folder: str, manifest: dict) -> None:
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
                files[name] = {"size": os.path.getsize(path), "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
    with open(os.path.join(folder, MANIFEST_NAME), "w") as f:
        json.dump({**manifest, "files": files}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(folder: str) -> None:
    """Make a rename in `folder` durable (not possible on every platform: Windows cannot open a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_folder(folder: str) -> None:
    """Delete a checkpoint folder; of a symlink to one, the link alone (what it points to is not ours)."""
    if os.path.islink(folder):
        logger.info(f"Removed the link {folder} (its target, {os.path.realpath(folder)}, is left as it is)")
        os.unlink(folder)
    else:
        shutil.rmtree(folder)


def read_manifest(folder: str) -> dict:
    """The manifest of a checkpoint ({} when absent or unreadable)."""
    try:
        with open(os.path.join(folder, MANIFEST_NAME)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def checkpoint_problem(folder: str, tolerate_rng_states: bool = False) -> str | None:
    """
    Why `folder` is not a good checkpoint (one line naming the files: a missing or unreadable manifest, or a file
    missing or differing from the size and sha256 hash the manifest recorded), or None when it is good.
    `tolerate_rng_states`: broken RNG state files alone do not count (`--allow_inexact_resume`; the resume then warns
    that it is not exact).
    """
    if not os.path.isfile(os.path.join(folder, MANIFEST_NAME)):
        return f"{MANIFEST_NAME}: missing (not written by hf_ddpm, or not finished)"
    files = read_manifest(folder).get("files")
    if not isinstance(files, dict):
        return f"{MANIFEST_NAME}: unreadable"
    problems = [
        f"{name}: {problem}"
        for name, expected in files.items()
        if not (tolerate_rng_states and RNG_STATE_RE.match(name))
        and (problem := file_problem(folder, name, expected)) is not None
    ]
    return "; ".join(problems) or None


def file_problem(folder: str, name: str, expected: dict) -> str | None:
    """How the file `name` of `folder` differs from its manifest entry {"size", "sha256"} (or size), or None."""
    expected = expected if isinstance(expected, dict) else {"size": expected}  # manifests before sha256: sizes
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) != expected.get("size"):
        return f"{os.path.getsize(path)} bytes instead of {expected.get('size')}"
    with open(path, "rb") as f:
        if "sha256" in expected and hashlib.file_digest(f, "sha256").hexdigest() != expected["sha256"]:
            return "content differs from its sha256 in the manifest"
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


def prune_checkpoints(output_dir: str, total_limit: int, keep=frozenset()) -> None:
    """
    Delete the oldest checkpoints so that at most `total_limit` remain besides those whose step is in `keep`
    (checkpoints newer than the one a run resumed from, which it has not rewritten).
    """
    checkpoints = [folder for step, folder in list_checkpoints(output_dir) if step not in keep]
    for folder in checkpoints[: max(0, len(checkpoints) - total_limit)]:
        remove_folder(folder)


def resolve_resume_checkpoint(spec: str | None, output_dir: str, tolerate_rng_states: bool = False) -> str | None:
    """
    The checkpoint folder that `--resume_from_checkpoint` names: `latest` (None when `output_dir` has none), a folder
    (checked), or `hub:REPO_ID[@REVISION]` (downloaded by `hf_ddpm.hub.download_checkpoint`, then checked).
    """
    if spec is None:
        return None
    if spec == "latest":
        folder = latest_checkpoint(output_dir, tolerate_rng_states)
    else:
        if spec.startswith("hub:"):
            from ..hub import download_checkpoint

            folder = download_checkpoint(spec)
        else:
            folder = spec
        problem = checkpoint_problem(folder, tolerate_rng_states) if os.path.isdir(folder) else "it is not a folder"
        if problem is not None:
            raise UsageError(f"--resume_from_checkpoint {spec}: {folder} is broken: {problem}.")
    if folder is not None and "flat_parameters" in read_manifest(folder).get("flags", {}):  # recorded until 09c7a14
        raise UsageError(
            f"--resume_from_checkpoint {spec}: {folder} was saved by hf-ddpm 09c7a14 or earlier (--flat_parameters,"
            " another data order), which this version does not resume: finish it with that version, or start over."
        )
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
    recorded = read_manifest(folder).get("files", {}).get(name)
    damaged = None if recorded is None else file_problem(folder, name, recorded)
    if damaged is not None:  # it may still unpickle, into other states than were saved
        return f"{name}: {damaged}"
    try:
        states = torch.load(os.path.join(folder, name), weights_only=False)  # what accelerate unpickled just now
        restored = (
            torch.equal(states["torch_manual_seed"], torch.get_rng_state())
            and random.getstate() == states["random_state"]
            and all(
                np.array_equal(a, b) for a, b in zip(np.random.get_state(), states["numpy_random_seed"], strict=True)
            )
        )
    except Exception as error:  # a damaged pickle raises anything
        return f"{name} could not be read ({type(error).__name__}: {error})"
    return None if restored else f"{name} was not restored"


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
