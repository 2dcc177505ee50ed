# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""scikit-learn's 8x8 digits and their fixed held-out split: one definition for training and evaluation.

The split is `sklearn.model_selection.train_test_split(range(1797), test_size=0.1, stratify=labels, random_state=0)`:
1,617 training and 180 test images with the class proportions of the full set. It is the DDPM's held-out split for
bits/dim and the split the shipped digits classifier was trained and tested on. Pixels 0..16 map to uint8 by
round(v * 255 / 16). (The Space, which runs without hf_ddpm installed, keeps its own copy.)
"""

import numpy as np

DIGITS_SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.1
DIGITS_SPLIT_SEED = 0


def load_digits(split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """
    scikit-learn's 8x8 digits as uint8 images.

    Args:
        split (`"train"`, `"test"` or `"all"`, defaults to `"all"`):
            The fixed stratified split described in the module docstring, or all 1,797 images.

    Returns:
        `tuple`: the images, uint8 [N x 8 x 8 x 1], and their labels, int64 [N].
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"`split` must be one of {', '.join(map(repr, DIGITS_SPLITS))}, got {split!r}.")
    from sklearn.datasets import load_digits as sklearn_load_digits

    digits = sklearn_load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    if split == "all":
        return images, labels
    train_index, test_index = digits_split_indices(labels)
    index = train_index if split == "train" else test_index
    return images[index], labels[index]


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted indices of the fixed stratified train and test splits of the digits."""
    from sklearn.model_selection import train_test_split

    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return np.sort(train_index), np.sort(test_index)
