# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
Evaluation of DDPM models: exact bits/dim of a dataset split and sample-quality metrics.

    bpd.py                the variational bound of a split in bits/dim (`dataset_bits_per_dim`)
    frechet.py            the Frechet distance in float64 and the Inception (FID) and DINOv2 feature spaces
    digits_classifier.py  the small digits CNN that ships with hf_ddpm, the feature space of fd-digits
    metrics.py            fd-digits, fd-dinov2 and FID of generated samples against reference images
    data.py               the evaluation images: sklearn digits (fixed split), a `datasets` split or an image folder
    results.py            eval_results.json, merged entry by entry
    cli.py                `hf-ddpm eval`
"""

from .._lazy import lazy_exports

# Public names and their modules, imported on first use: `hf-ddpm --help` imports `hf_ddpm.evaluation.cli` and must
# not pay for torch, scikit-learn and transformers.
_EXPORTS = {
    "DatasetBitsPerDim": "bpd",
    "dataset_bits_per_dim": "bpd",
    "load_digits": "data",
    "load_images": "data",
    "DigitsClassifier": "digits_classifier",
    "digits_sample_statistics": "digits_classifier",
    "Dinov2Features": "frechet",
    "InceptionFID": "frechet",
    "bootstrap_frechet_distances": "frechet",
    "frechet_distance": "frechet",
    "frechet_distance_of_features": "frechet",
    "gaussian_statistics": "frechet",
    "resolve_inception_weights": "frechet",
    "digits_reference_images": "metrics",
    "fd_digits": "metrics",
    "fd_dinov2": "metrics",
    "fid": "metrics",
    "read_eval_results": "results",
    "write_eval_results": "results",
    "generate_samples": ".sampling",  # hf_ddpm.sampling, shared with `hf-ddpm sample`
    "with_variance_type": "._variance",  # hf_ddpm._variance, shared with `hf-ddpm sample`
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
