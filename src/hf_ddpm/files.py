# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Writing files so that a reader never sees half of one."""

import os
import tempfile


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """
    Write `text` to `path` through a temporary sibling and a rename: a reader sees the old file or the new one, and a
    failed write leaves the old one. The file gets the mode a plain `open` would give (mkstemp's is private).
    """
    path = os.fspath(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
