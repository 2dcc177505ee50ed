# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
A small CNN classifier of scikit-learn's 8x8 digits, whose penultimate layer is the feature space of `fd-digits`.

Inception features mean little for 8x8 grayscale digits, so the digits metrics use a classifier trained on the
digits themselves, as FID uses one trained on ImageNet. The weights ship with hf_ddpm in
`hf_ddpm/assets/digits_classifier.safetensors`, beside `digits_classifier.json` (architecture, training recipe and
measured accuracy). They were trained by `python benchmarks/train_digits_classifier.py` (seed 0, one CPU thread,
60 epochs of AdamW with a cosine learning rate on the 1,617 training images of the fixed stratified split of
`hf_ddpm._digits`, random shifts of up to one pixel as augmentation) and reach a held-out test accuracy of 100.00%
(180 of the 180 test images; 99.88% on the training images). Reruns give identical weights on one machine, not
across CPUs: on the project's shared CPU machine (torch 2.13) the script gives other weights, 179 of 180 correct.

Architecture, on images in [0, 1] mapped to [-1, 1]:
    conv3x3(1->32) ReLU, conv3x3(32->32) ReLU, maxpool 2   -> 32 x 4 x 4
    conv3x3(32->64) ReLU, conv3x3(64->64) ReLU, maxpool 2  -> 64 x 2 x 2
    flatten, linear(256->64) ReLU                          -> the 64-d features of fd-digits
    linear(64->10)                                         -> class logits

The sample statistics of the classifier (`digits_sample_statistics`):
    - mean confidence: the mean over samples of the largest softmax probability (high for crisp digits);
    - class coverage: how many of the 10 classes are the predicted class of at least 5% of the samples, half the
      share of a class in a uniform mix (10 for a model that makes every digit, fewer for a mode-dropping one);
    - class entropy: the entropy of the histogram of predicted classes, in bits (log2(10) = 3.32 at most).
"""

import json
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
WEIGHTS_PATH = os.path.join(ASSET_DIR, "digits_classifier.safetensors")
CONFIG_PATH = os.path.join(ASSET_DIR, "digits_classifier.json")
COVERAGE_THRESHOLD = 0.05
NUM_CLASSES = 10


class DigitsClassifier(nn.Module):
    """
    The digits CNN.

    Args:
        channels (`tuple[int, int]`, defaults to `(32, 64)`): the width of the two conv blocks.
        feature_dim (`int`, defaults to 64): the width of the penultimate layer (the fd-digits features).
        num_classes (`int`, defaults to 10).
        image_size (`int`, defaults to 8): the side of the input images (two 2x poolings).
    """

    def __init__(self, channels=(32, 64), feature_dim: int = 64, num_classes: int = NUM_CLASSES, image_size: int = 8):
        super().__init__()
        self.config = {
            "channels": list(channels),
            "feature_dim": feature_dim,
            "num_classes": num_classes,
            "image_size": image_size,
        }
        width1, width2 = channels
        self.block1 = nn.Sequential(
            nn.Conv2d(1, width1, 3, padding=1), nn.ReLU(), nn.Conv2d(width1, width1, 3, padding=1), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width1, width2, 3, padding=1), nn.ReLU(), nn.Conv2d(width2, width2, 3, padding=1), nn.ReLU()
        )
        self.penultimate = nn.Linear(width2 * (image_size // 4) ** 2, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer activations [N x feature_dim] of images [N x 1 x 8 x 8] in [0, 1]."""
        x = images * 2 - 1
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        return F.relu(self.penultimate(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [N x 10] of images [N x 1 x 8 x 8] in [0, 1]."""
        return self.head(self.features(images))

    @classmethod
    def from_asset(cls, weights_path: str = WEIGHTS_PATH, config_path: str = CONFIG_PATH) -> "DigitsClassifier":
        """The classifier that ships with hf_ddpm (or one from benchmarks/train_digits_classifier.py), in eval mode."""
        from safetensors.torch import load_file

        with open(config_path) as f:
            config = json.load(f)
        model = cls(**config["architecture"])
        model.load_state_dict(load_file(weights_path))
        return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(model: DigitsClassifier, images, batch_size: int = 512) -> np.ndarray:
    """The predicted class [N] of images (uint8 [N x 8 x 8 x 1] or float [N x 1 x 8 x 8] in [0, 1])."""
    return classify(model, images, batch_size)[1].argmax(axis=1)


@torch.no_grad()
def classify(model: DigitsClassifier, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """
    Features and class probabilities of images.

    Returns:
        `tuple`: float64 penultimate features [N x feature_dim] and softmax probabilities [N x 10].
    """
    from .frechet import to_unit_images

    x = to_unit_images(images)
    device = next(model.parameters()).device
    features, probabilities = [], []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].to(device)
        batch_features = model.features(batch)
        features.append(batch_features.double().cpu())
        probabilities.append(torch.softmax(model.head(batch_features).double(), dim=1).cpu())
    return torch.cat(features).numpy(), torch.cat(probabilities).numpy()


def digits_sample_statistics(probabilities: np.ndarray) -> dict:
    """
    `mean_confidence`, `class_coverage`, `class_entropy_bits` and `class_histogram` (see the module docstring) of
    samples, from their class probabilities [N x 10].
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    histogram = np.bincount(predicted, minlength=probabilities.shape[1]) / len(predicted)
    nonzero = histogram[histogram > 0]
    return {
        "mean_confidence": float(probabilities.max(axis=1).mean()),
        "class_coverage": int((histogram >= COVERAGE_THRESHOLD).sum()),
        "class_entropy_bits": float(-(nonzero * np.log2(nonzero)).sum()),
        "class_histogram": histogram.tolist(),
    }
