# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Writing files and folders so that a reader never sees half of one."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

from ._errors import UsageError


def atomic_save(path: str | os.PathLike, save: Callable[[str], None]) -> None:
    """
    `save(temporary)` writes a temporary sibling, which then replaces `path` with one rename: a reader sees the old
    file or the new one, and a failed write leaves the old one. The mode is a plain `open`'s (mkstemp's is private).
    """
    path = os.fspath(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    os.close(handle)
    try:
        save(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_save`)."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    atomic_save(path, write)


def read_json_object(path: str | os.PathLike, advice: str = "") -> dict:
    """The JSON object in `path`; a `ValueError` naming the file (then `advice`) when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}{advice}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object{advice or '.'}")
    return data


def replace_folder(source: str, target: str) -> None:
    """Rename the complete folder `source` to `target` (same file system): an old `target` is moved aside, then deleted
    once the new one is in place, so that `target` is always the old folder or the new one, whole."""
    if not os.path.lexists(target):
        os.replace(source, target)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
    os.replace(target, os.path.join(old, "folder"))
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def check_output_dir(output_dir: str, inputs: Iterable[str] = (), flag: str = "--output_dir") -> None:
    """
    Refuse (`UsageError`, before any work) an output folder that is, or holds, the current folder, the home folder or
    one of the local `inputs` (the model a command reads): a command that replaces or fills `output_dir` must never
    take those with it. "" and "." are the current folder; "/" holds every folder. A file is refused too.
    """
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"{flag} {output_dir} is a file, not a folder.")
    target = os.path.realpath(output_dir)
    protected = {"the current folder": os.getcwd(), "the home folder": os.path.expanduser("~")}
    protected.update({f"the input {path}": path for path in inputs if os.path.exists(path)})
    for name, folder in protected.items():
        if os.path.commonpath([target, os.path.realpath(folder)]) == target:
            raise UsageError(f"{flag} {output_dir!r} is {target}, which is or holds {name}: pick a folder of its own.")


def make_public(folder: str) -> None:
    """Give a `tempfile.mkdtemp` folder (private) the mode a plain `os.makedirs` would give."""
    os.chmod(folder, 0o777 & ~_umask())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
