# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Evaluation of DDPM models: the metrics and eval_results.json (`metrics`), the Frechet distance and its feature
spaces (`frechet`, `digits_classifier`), the evaluation images (`data`) and `hf-ddpm eval` (`cli`)."""
