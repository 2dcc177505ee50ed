# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The sample-quality metrics: a Frechet distance between generated images and reference images in one feature space.

    fd-digits   the penultimate layer of the digits classifier that ships with hf_ddpm (8x8 grayscale digits only),
                plus the classifier's mean confidence, class coverage and class entropy of the samples;
    fd-dinov2   DINOv2's CLS token (transformers `AutoModel`);
    fid         Inception-v3 pool3 through torchmetrics, from local weights only.

Each function takes the generated images as a float tensor [N x C x H x W] in [0, 1] (see
`hf_ddpm.sampling.generate_samples`) and returns the metric's entry of eval_results.json: a dict with the distance
`value`, `num_samples`, `num_reference` and what the metric adds (its feature space, the classifier's statistics...).
fd-digits can also give its standard error over the draw of the N samples (a bootstrap of the samples' features,
`bootstrap=B`). What a perfect sampler scores at N, the floor below which differences between samplers mean nothing,
is fd-digits of N real digits outside the reference, e.g.
`fd_digits(load_digits("test")[0][:N], reference="digits-train", bootstrap=200)`.
"""

import numpy as np
import torch

from .data import load_digits
from .frechet import bootstrap_frechet_distances, frechet_distance_of_features, to_unit_images

DIGITS_REFERENCES = ("digits", "digits-train", "digits-test")


def digits_reference_images(reference: str = "digits") -> np.ndarray:
    """
    The reference images of fd-digits, uint8 [N x 8 x 8 x 1].

    Args:
        reference (`"digits"`, `"digits-train"` or `"digits-test"`, defaults to `"digits"`): all 1,797 digits, or one
            side of the fixed split of `hf_ddpm._digits`.
    """
    if reference not in DIGITS_REFERENCES:
        raise ValueError(f"`reference` must be one of {', '.join(map(repr, DIGITS_REFERENCES))}, got {reference!r}.")
    split = {"digits": "all", "digits-train": "train", "digits-test": "test"}[reference]
    return load_digits(split)[0]


def _check_samples(samples: torch.Tensor) -> torch.Tensor:
    samples = to_unit_images(samples)
    if samples.shape[0] < 2:
        raise ValueError(f"A Frechet distance needs at least 2 samples, got {samples.shape[0]}.")
    return samples


def fd_digits(
    samples: torch.Tensor | np.ndarray,
    reference: str | np.ndarray = "digits",
    classifier=None,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """
    fd-digits: the Frechet distance in the digits classifier's 64-d penultimate feature space, with the classifier's
    statistics of the samples.

    Args:
        samples (`torch.Tensor` or `np.ndarray`): float [N x 1 x 8 x 8] in [0, 1] or uint8 [N x 8 x 8 x 1].
        reference (`str` or `np.ndarray`, defaults to `"digits"`): a name of `DIGITS_REFERENCES`, or the reference
            images themselves (uint8 [M x 8 x 8 x 1]).
        classifier ([`DigitsClassifier`], *optional*): the shipped classifier when `None`.
        bootstrap (`int`, defaults to 0): B > 0 also gives the standard error of the distance over the draw of the N
            samples: the standard deviation of the distances of B resamples of the samples' features (with
            replacement; the reference is fixed). 200 is plenty and costs well under a second. It errs on the safe
            side: close to the metric's floor the resamples' repeated rows add spread (on real digits, scored against
            the held-out ones, it is 1.7x the true spread at N = 180, 1.4x at 500, 1.1x at 1,000); well above the
            floor it is within 10% (Gaussian features, see the tests).
        seed (`int`, defaults to 0): the seed of the bootstrap resampling.

    Returns:
        `dict`: `value`, `num_samples`, `num_reference`, `reference`, `mean_confidence`, `class_coverage`,
        `class_entropy_bits` and `class_histogram`; with `bootstrap`, also `standard_error`, `bootstrap` (B),
        `bootstrap_seed` and `bootstrap_mean` (the mean distance of the resamples, above `value` by about the
        distance's finite-sample bias).
    """
    if bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"`bootstrap` must be 0 (none) or a number of resamples >= 2, got {bootstrap!r}.")
    from .digits_classifier import DigitsClassifier, classify, digits_sample_statistics

    samples = _check_samples(samples)
    if tuple(samples.shape[1:]) != (1, 8, 8):
        raise ValueError(f"fd-digits scores 8x8 grayscale digits [N x 1 x 8 x 8]; got images {tuple(samples.shape)}.")
    reference_name = reference if isinstance(reference, str) else "custom"
    reference_images = digits_reference_images(reference) if isinstance(reference, str) else reference
    classifier = DigitsClassifier.from_asset() if classifier is None else classifier
    sample_features, probabilities = classify(classifier, samples)
    reference_features, _ = classify(classifier, reference_images)
    result = {
        "value": frechet_distance_of_features(sample_features, reference_features),
        "num_samples": len(sample_features),
        "num_reference": len(reference_features),
        "reference": reference_name,
        **digits_sample_statistics(probabilities),
    }
    if bootstrap:
        distances = bootstrap_frechet_distances(sample_features, reference_features, bootstrap, seed)
        result.update(standard_error=float(distances.std(ddof=1)), bootstrap=int(bootstrap), bootstrap_seed=seed)
        result["bootstrap_mean"] = float(distances.mean())
    return result


def fd_dinov2(samples: torch.Tensor, reference_images, extractor) -> dict:
    """
    fd-dinov2: the Frechet distance in DINOv2's CLS-token feature space.

    Args:
        samples (`torch.Tensor`): float [N x C x H x W] in [0, 1].
        reference_images: uint8 [M x H x W x C] or float [M x C x H x W] in [0, 1].
        extractor ([`~hf_ddpm.evaluation.frechet.Dinov2Features`]): the loaded model.
    """
    samples = _check_samples(samples)
    value = frechet_distance_of_features(extractor(samples), extractor(to_unit_images(reference_images)))
    model = getattr(extractor.model.config, "_name_or_path", None) or "dinov2"
    return {"value": value, "num_samples": len(samples), "num_reference": len(reference_images), "model": model}


def fid(samples: torch.Tensor, reference_images, metric) -> dict:
    """
    FID with torchmetrics' `FrechetInceptionDistance`.

    Args:
        samples (`torch.Tensor`): float [N x C x H x W] in [0, 1].
        reference_images: uint8 [M x H x W x C] or float [M x C x H x W] in [0, 1].
        metric ([`~hf_ddpm.evaluation.frechet.InceptionFID`]): the loaded metric.
    """
    samples = _check_samples(samples)
    value = metric(to_unit_images(reference_images), samples)
    return {
        "value": value,
        "num_samples": len(samples),
        "num_reference": len(reference_images),
        "inception_weights": metric.weights_path,
    }
