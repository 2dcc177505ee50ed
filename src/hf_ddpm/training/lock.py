# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""One training run per output folder: an exclusive lock on `output_dir/.hf-ddpm-train.lock`.

Two runs writing into one folder would delete each other's temporary checkpoint folders and interleave checkpoints.
The lock is an `fcntl.flock` on a file in the folder: the kernel drops it when the holding process ends, however it
ends (a `kill -9` included), so a killed run never leaves the folder locked. The file holds the holder's pid, host and
start time, for the message of the run that is refused; the file itself stays (deleting it would let a third run
lock a new file while a second still holds the old one).
"""

import datetime
import os
import socket

from .._errors import UsageError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from each other there
    fcntl = None

LOCK_NAME = ".hf-ddpm-train.lock"


class OutputDirLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._file = None

    def acquire(self) -> "OutputDirLock":
        """Take the lock, or raise `UsageError` naming the folder and the run that holds it."""
        if fcntl is None:
            return self
        # no O_TRUNC: the holder's pid and host must survive a refused attempt to open the file
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        lock_file = os.fdopen(descriptor, "r+")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_file.read().strip() or "a process that has not written its pid yet"
            lock_file.close()
            raise UsageError(
                f"--output_dir {self.output_dir} is in use by another training run ({holder}; lock file"
                f" {self.path}): wait for it to end, stop it, or pass another --output_dir."
            ) from None
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        lock_file.truncate(0)
        lock_file.write(f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n")
        lock_file.flush()
        self._file = lock_file
        # a forked child (a DataLoader worker) shares the locked file description, and flock is released only when
        # every copy is closed: a worker outliving a killed run would keep the folder locked, so children close theirs
        os.register_at_fork(after_in_child=self._close_in_child)
        return self

    def _close_in_child(self) -> None:
        if self._file is not None:  # the child's copy of the descriptor then points at /dev/null; the lock stays
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, self._file.fileno())
            os.close(devnull)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
