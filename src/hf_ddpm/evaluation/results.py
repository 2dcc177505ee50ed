# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
`eval_results.json`, the file beside a saved model that its model card reads.

One entry per metric, each a JSON object with at least `value`:

    {
      "bits_per_dim": {"value": 1.52, "standard_error": 0.01, "num_images": 180, "dataset": "digits", ...},
      "fd_digits": {"value": 0.84, "num_samples": 1000, "num_inference_steps": 1000, "seed": 0, ...},
      "fd_dinov2": {...},
      "fid": {...}
    }

Writing merges: a new result replaces the entry of its metric only, and the file is replaced atomically.
"""

import json
import math
import os

from ..files import atomic_write_text, read_json_object

RESULTS_FILE = "eval_results.json"
METRIC_KEYS = {"bpd": "bits_per_dim", "fd-digits": "fd_digits", "fd-dinov2": "fd_dinov2", "fid": "fid"}


def read_eval_results(folder: str) -> dict:
    """The results in `folder`/eval_results.json, or `{}` when there is none."""
    path = os.path.join(folder, RESULTS_FILE)
    if not os.path.exists(path):
        return {}
    return read_json_object(path, advice="; move it away to write new results.")


def write_eval_results(folder: str, new_results: dict) -> str:
    """
    Merge `new_results` ({key: {"value": ...}}) into `folder`/eval_results.json and return the path.

    Existing entries of other metrics are kept; NaN and infinities are written as null (JSON has no NaN).
    """
    os.makedirs(folder, exist_ok=True)
    results = read_eval_results(folder)
    results.update(_json_safe(new_results))
    path = os.path.join(folder, RESULTS_FILE)
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        return _json_safe(value.item())
    return value
