# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The output folder of a run: its lock (one run per folder) and its checkpoints, safe from crashes.

A checkpoint is `accelerator.save_state` written into a hidden temporary folder, given a manifest of the size and
sha256 of each file, then renamed to `checkpoint-<step>`: a kill at any moment leaves the earlier checkpoints as they
were. A checkpoint whose files differ from its manifest (truncated, a flipped bit...) is broken: `latest` skips it
and names it, and a checkpoint named on the command line is refused.
"""

import datetime
import hashlib
import json
import logging
import os
import shutil
import socket

from .._errors import UsageError
from ..files import replace_folder

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from each other there
    fcntl = None

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint.json"
TEMP_PREFIX = ".tmp-checkpoint-"
HOLDER_NAME = ".hf-ddpm-train.lock"  # names the run holding the lock, for the message of a run refused


class OutputDirLock:
    """
    An exclusive `flock` on the output folder itself (a file in it could be deleted by tidying while a run holds it),
    held from `acquire` to `release`; the kernel drops it when the process ends, however it ends.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.descriptor = None

    def acquire(self) -> "OutputDirLock":
        """Take the lock, or raise `UsageError` naming the folder and the run that holds it."""
        if fcntl is None:
            return self
        descriptor = os.open(self.output_dir, os.O_RDONLY)
        holder_path = os.path.join(self.output_dir, HOLDER_NAME)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            try:
                with open(holder_path) as f:
                    holder = f.read().strip()
            except OSError:  # deleted: the lock holds all the same
                holder = "pid unknown"
            raise UsageError(
                f"--output_dir {self.output_dir} is in use by another training run ({holder}): wait for it to end,"
                " stop it, or pass another --output_dir."
            ) from None
        self.descriptor = descriptor
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        with open(holder_path, "w") as f:
            f.write(f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n")
        # a forked child (a DataLoader worker) shares the locked file description, and flock lasts until every copy
        # is closed: a worker outliving a killed run would keep the folder locked
        os.register_at_fork(after_in_child=self.release)
        return self

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


def checkpoint_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"checkpoint-{step}")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """The `checkpoint-<step>` folders of `output_dir`, complete or not, as (step, folder) by ascending step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = name.removeprefix("checkpoint-")
        if step != name and step.isdecimal() and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(step), os.path.join(output_dir, name)))
    return sorted(found)


def save_checkpoint(accelerator, output_dir: str, step: int, flags: dict, total_limit=None, keep=frozenset()) -> str:
    """
    Save the training state as `output_dir/checkpoint-<step>` on every process, its manifest recording `flags`; then
    keep the newest `total_limit` checkpoints, not counting the steps in `keep`. Returns the checkpoint's folder.
    """
    final, temp = checkpoint_path(output_dir, step), os.path.join(output_dir, f"{TEMP_PREFIX}{step}")
    if accelerator.is_main_process:
        for name in os.listdir(output_dir):  # left by saves that were killed mid-write
            if name.startswith(TEMP_PREFIX):
                shutil.rmtree(os.path.join(output_dir, name))
    accelerator.wait_for_everyone()
    accelerator.save_state(temp)  # every process writes its own RNG state file
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        names = sorted(name for name in os.listdir(temp) if os.path.isfile(os.path.join(temp, name)))
        files = {name: _file_record(os.path.join(temp, name)) for name in names}
        with open(os.path.join(temp, MANIFEST_NAME), "w") as f:
            json.dump({"step": step, "flags": flags, "files": files}, f, indent=2)
        replace_folder(temp, final)  # a re-run of the same step: replaced only once the new one is complete
        if total_limit is not None:  # the oldest go; the steps in `keep` do not count
            counted = [folder for saved, folder in list_checkpoints(output_dir) if saved not in keep]
            for folder in counted[: max(0, len(counted) - total_limit)]:
                remove_folder(folder)
    accelerator.wait_for_everyone()
    return final


def _file_record(path: str) -> dict:
    with open(path, "rb") as f:
        return {"size": os.path.getsize(path), "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def remove_folder(folder: str) -> None:
    """Delete a checkpoint folder; of a symlink to one, the link alone (what it points to is not ours)."""
    if os.path.islink(folder):
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
    Why `folder` is not a good checkpoint, in one line naming its files; None when it is good.
    `tolerate_rng_states`: damaged RNG state files do not count (`--allow_inexact_resume`).
    """
    files = read_manifest(folder).get("files")
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        return f"{MANIFEST_NAME}: missing or unreadable (not written by hf_ddpm, or not finished)"
    problems = []
    for name, expected in files.items():
        path = os.path.join(folder, name)
        if tolerate_rng_states and name.startswith("random_states_"):
            continue
        if not os.path.isfile(path):
            problems.append(f"{name}: missing")
        elif os.path.getsize(path) != expected.get("size"):
            problems.append(f"{name}: {os.path.getsize(path)} bytes instead of {expected.get('size')}")
        elif _file_record(path) != expected:
            problems.append(f"{name}: content differs from its sha256 in the manifest")
    return "; ".join(problems) or None


def latest_checkpoint(output_dir: str, tolerate_rng_states: bool = False) -> str | None:
    """
    The good checkpoint of the highest step (None when there is no checkpoint), naming in a warning the broken ones
    it skipped. When every checkpoint is broken, raises `UsageError` naming them: starting over would be wrong.
    """
    broken = []
    for _, folder in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(folder, tolerate_rng_states)
        if problem is None:
            if broken:
                logger.warning(
                    f"Resuming from {folder}, the newest good checkpoint; skipped the broken newer one(s), kept on"
                    f" disk: {' | '.join(broken)}."
                )
            return folder
        broken.append(f"{folder} ({problem})")
    if broken:
        raise UsageError(
            f"--resume_from_checkpoint latest: every checkpoint in {output_dir} is broken: {' | '.join(broken)}."
            " Resume from a good copy (a folder or hub:REPO_ID), or start over with --overwrite_output_dir."
        )
    return None


def resolve_resume_checkpoint(spec: str | None, output_dir: str, tolerate_rng_states: bool = False) -> str | None:
    """
    The good checkpoint folder `--resume_from_checkpoint` names: `latest` (None when `output_dir` has none), a folder,
    or `hub:REPO_ID[@REVISION]` (downloaded); a broken one is refused (`UsageError`).
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
        problem = checkpoint_problem(folder, tolerate_rng_states)
        if problem is not None:
            raise UsageError(f"--resume_from_checkpoint {spec}: {folder} is broken: {problem}.")
    if folder is not None and "flat_parameters" in read_manifest(folder).get("flags", {}):  # recorded until 09c7a14
        raise UsageError(
            f"--resume_from_checkpoint {spec}: {folder} was saved by hf-ddpm 09c7a14 or earlier (--flat_parameters,"
            " another data order), which this version does not resume: finish it with that version, or start over."
        )
    return folder


def changed_flags(folder: str, flags: dict) -> str | None:
    """The flags of `flags` that the manifest of `folder` recorded with other values ("--name old (this run: new)")."""
    recorded = read_manifest(folder).get("flags", {})
    changes = [
        f"--{name} {recorded[name]} (this run: {value})"
        for name, value in flags.items()
        if name in recorded and recorded[name] != value
    ]
    return ", ".join(changes) or None
