# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The allowed values of string options, importable without torch: the command line lists them in `--help`."""

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
