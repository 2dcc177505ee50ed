# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The allowed values of options, importable without torch: the command line lists them in `--help`."""

import argparse

# Copies of the scheduler's own (its module travels alone as remote code and cannot import them from here);
# tests/test_layers.py keeps them equal.
VARIANCE_TYPES = (
    "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range", "analytic",
)  # fmt: skip
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
# The values of `diffusers.optimization.SchedulerType` (importing it imports torch); kept equal by the same test.
LR_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "piecewise_constant",
)  # fmt: skip

# The training objectives (hf_ddpm.training.losses) and timestep samplers (hf_ddpm.training.resample).
LOSS_TYPES = ("simple", "hybrid", "vlb")
TIMESTEP_SAMPLERS = ("auto", "uniform", "loss-second-moment")

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def int_range(low: int, high: int | None = None):
    """An argparse `type=`: an integer in [low, high] (no upper bound when `high` is None), refused in one line naming
    the flag (`choices=range(...)` would list every value)."""
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {text!r}")
        return value

    return integer


def checked(kind: type, allowed: str, test):
    """An argparse `type=`: `kind(text)`, refused with "must be `allowed`" unless `test(value)`."""

    def parse(text: str):
        value = kind(text)
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = kind.__name__  # text that is not a number: argparse's own "invalid int value: 'x'"
    return parse
