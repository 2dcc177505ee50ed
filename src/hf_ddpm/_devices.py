# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The `--device` choice shared by sampling, evaluation and training: importable without torch (for `--help`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")  # the flag's `choices`


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is not available is refused (`UsageError`)."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise UsageError("--device cuda: no CUDA device is available on this machine (use --device cpu).")
    if name == "mps" and not mps:
        raise UsageError("--device mps: the MPS backend is not available on this machine (use --device cpu).")
    return torch.device(name)
