# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The metrics, each as its entry of eval_results.json (a dict with at least `value`), and that file.

Samples are float tensors [N x C x H x W] in [0, 1] (`hf_ddpm.sampling.generate_samples`). What a perfect sampler
scores at N, below which differences between samplers mean nothing, is fd-digits of N real digits outside the
reference, e.g. `fd_digits(load_digits("test")[0][:N], reference="digits-train", bootstrap=200)`.
"""

import json
import math
import os

import numpy as np
import torch

from .._digits import load_digits
from ..files import atomic_write_text, read_json_object
from .digits_classifier import DigitsClassifier, classify, digits_sample_statistics
from .frechet import bootstrap_frechet_distances, frechet_distance_of_features, to_unit_images

RESULTS_FILE = "eval_results.json"
DIGITS_REFERENCES = {"digits": "all", "digits-train": "train", "digits-test": "test"}  # -> hf_ddpm._digits splits


def summarize_bits_per_dim(output) -> dict:
    """
    The bound of a set of images from `DDPMPosteriorPipeline.bits_per_dim`'s output: its mean over the images
    (`value`) and the standard error of that mean, `num_images`, `num_timesteps` (evaluated per image, the decoder
    included), and the mean `prior`, `decoder` and `kl` (the weighted sum of the KL terms) parts.
    """
    terms = output.vb_bpd.double()  # [N x T'], column 0 the decoder
    return {
        "value": output.bpd.double().mean().item(),
        "standard_error": float(output.standard_error),
        "num_images": terms.shape[0],
        "num_timesteps": terms.shape[1],
        "prior": output.prior_bpd.double().mean().item(),
        "decoder": terms[:, 0].mean().item(),
        "kl": (terms[:, 1:] * output.weights[1:].double()).sum(dim=1).mean().item(),
    }


def fd_digits(
    samples: torch.Tensor | np.ndarray, reference: str | np.ndarray = "digits", bootstrap: int = 0, seed: int = 0
) -> dict:
    """
    fd-digits: the Frechet distance in the 64-d features of the digits classifier, with its statistics of the samples.

    Args:
        samples (`torch.Tensor` or `np.ndarray`): float [N x 1 x 8 x 8] in [0, 1] or uint8 [N x 8 x 8 x 1].
        reference (`str` or `np.ndarray`, defaults to `"digits"`): `"digits"` (all 1,797), `"digits-train"` or
            `"digits-test"` (one side of the fixed split), or the reference images, uint8 [M x 8 x 8 x 1].
        bootstrap (`int`, defaults to 0): B >= 2 adds the standard error of the distance over the draw of the N
            samples: the spread of the distances of B resamples of their features. 200 is plenty. Close to the
            metric's floor it errs on the safe side (on real digits: 1.7x the true spread at N = 180, 1.1x at 1,000);
            well above it, it is within 10%.
        seed (`int`, defaults to 0): the seed of the resampling.

    Returns:
        `dict`: `value`, `num_samples`, `num_reference`, `reference` and `digits_sample_statistics`; with `bootstrap`,
        also `standard_error`, `bootstrap`, `bootstrap_seed` and `bootstrap_mean` (the resamples' mean distance,
        above `value` by about the distance's finite-sample bias).
    """
    if bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"`bootstrap` must be 0 (none) or a number of resamples >= 2, got {bootstrap!r}.")
    samples = to_unit_images(samples)
    if tuple(samples.shape[1:]) != (1, 8, 8):
        raise ValueError(f"fd-digits scores 8x8 grayscale digits [N x 1 x 8 x 8]; got images {tuple(samples.shape)}.")
    reference_images = load_digits(DIGITS_REFERENCES[reference])[0] if isinstance(reference, str) else reference
    classifier = DigitsClassifier.from_asset()
    features, probabilities = classify(classifier, samples)
    reference_features, _ = classify(classifier, reference_images)
    result = {
        "value": frechet_distance_of_features(features, reference_features),
        "num_samples": len(features),
        "num_reference": len(reference_features),
        "reference": reference if isinstance(reference, str) else "custom",
        **digits_sample_statistics(probabilities),
    }
    if bootstrap:
        distances = bootstrap_frechet_distances(features, reference_features, bootstrap, seed)
        result.update(standard_error=float(distances.std(ddof=1)), bootstrap=bootstrap, bootstrap_seed=seed)
        result["bootstrap_mean"] = float(distances.mean())
    return result


def fd_dinov2(samples, reference_images, extractor) -> dict:
    """fd-dinov2 of samples against reference images with a `Dinov2Features` extractor (images as `fd_digits`'s)."""
    samples = to_unit_images(samples)
    value = frechet_distance_of_features(extractor(samples), extractor(to_unit_images(reference_images)))
    model = extractor.model.name_or_path
    return {"value": value, "num_samples": len(samples), "num_reference": len(reference_images), "model": model}


def fid(samples, reference_images, metric) -> dict:
    """FID of samples against reference images with an `InceptionFID` metric (images as `fd_digits`'s)."""
    return {
        "value": metric(to_unit_images(reference_images), to_unit_images(samples)),
        "num_samples": len(samples),
        "num_reference": len(reference_images),
        "inception_weights": metric.weights_path,
    }


def write_eval_results(folder: str, new_results: dict) -> str:
    """
    Merge `new_results` ({key: {"value": ...}}) into `folder`/eval_results.json, replacing the entries of their keys
    only, atomically; NaN and infinities are written as null (JSON has none). Returns the path.
    """
    path = os.path.join(folder, RESULTS_FILE)
    os.makedirs(folder, exist_ok=True)
    results = read_json_object(path, advice="; move it away to write new results.") if os.path.exists(path) else {}
    results.update(_json_safe(new_results))
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "item"):  # numpy and torch scalars
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value
