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


def checked(kind: type, allowed: str, test):
    """An argparse `type=`: `kind(text)` where `test` accepts it, else one line: "must be `allowed`, got 'text'"."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


def int_range(low: int, high: int | None = None):
    """An integer in [low, high] (no upper bound when `high` is None): `choices=range(...)` would list every value."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return checked(int, allowed, lambda value: value >= low and (high is None or value <= high))
