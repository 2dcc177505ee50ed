# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""One training run per output folder: an exclusive `fcntl.flock` on the folder itself.

Two runs writing into one folder would delete each other's temporary checkpoint folders and interleave checkpoints.
The lock is held on the folder (not on a file in it, which tidying could delete while a run holds it, letting a
second run in), and the kernel drops it when the holding process ends, however it ends (a `kill -9` included), so a
killed run never leaves the folder locked. `output_dir/.hf-ddpm-train.lock` names the holder (pid, host, start time)
for the message of the run that is refused; deleting it only makes that message vaguer.
"""

import datetime
import os
import socket

from .._errors import UsageError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from each other there
    fcntl = None

HOLDER_NAME = ".hf-ddpm-train.lock"


class OutputDirLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.holder_path = os.path.join(output_dir, HOLDER_NAME)
        self._descriptor = None

    def acquire(self) -> "OutputDirLock":
        """Take the lock, or raise `UsageError` naming the folder and the run that holds it."""
        if fcntl is None:
            return self
        descriptor = os.open(self.output_dir, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            try:
                with open(self.holder_path) as f:
                    holder = f.read().strip()
            except OSError:  # deleted: the lock is on the folder, it holds all the same
                holder = ""
            raise UsageError(
                f"--output_dir {self.output_dir} is in use by another training run ({holder or 'pid unknown'}): wait"
                " for it to end,"
                " stop it, or pass another --output_dir."
            ) from None
        self._descriptor = descriptor
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        with open(self.holder_path, "w") as f:
            f.write(f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n")
        # a forked child (a DataLoader worker) shares the locked file description, and flock is released only when
        # every copy is closed: a worker outliving a killed run would keep the folder locked, so children close theirs
        os.register_at_fork(after_in_child=self._close_in_child)
        return self

    def _close_in_child(self) -> None:
        if self._descriptor is not None:  # the child's copy of the descriptor then points at /dev/null; the lock stays
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, self._descriptor)
            os.close(devnull)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor releases the flock
            self._descriptor = None
