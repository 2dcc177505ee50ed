# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The digits CNN whose penultimate layer is the feature space of fd-digits: Inception features mean little for 8x8
grayscale digits, so fd-digits uses a classifier trained on the digits, as FID uses one trained on ImageNet.

The weights ship in `hf_ddpm/assets/` beside digits_classifier.json (training recipe and measured accuracy).
`python benchmarks/train_digits_classifier.py` trained them on the 1,617 training images of the fixed split of
`hf_ddpm._digits`: 100.00% held-out accuracy (180 of 180). Reruns give identical weights on one machine, not across
CPUs (on the project's shared CPU machine: other weights, 179 of 180).
"""

import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .frechet import to_unit_images

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
WEIGHTS_PATH = os.path.join(ASSET_DIR, "digits_classifier.safetensors")
CONFIG_PATH = os.path.join(ASSET_DIR, "digits_classifier.json")


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(),
    )


class DigitsClassifier(nn.Module):
    """
    On images [N x 1 x 8 x 8] in [0, 1], mapped to [-1, 1]: two blocks of two conv3x3 + ReLU and a 2x max-pool
    (32, then 64 channels: 64 x 2 x 2), linear(256 -> 64) + ReLU (the fd-digits features), linear(64 -> 10).
    """

    def __init__(self):
        super().__init__()
        self.block1, self.block2 = _conv_block(1, 32), _conv_block(32, 64)
        self.penultimate = nn.Linear(64 * 2 * 2, 64)
        self.head = nn.Linear(64, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The 64-d penultimate activations [N x 64]."""
        x = F.max_pool2d(self.block1(images * 2 - 1), 2)
        x = F.max_pool2d(self.block2(x), 2)
        return F.relu(self.penultimate(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [N x 10]."""
        return self.head(self.features(images))

    @classmethod
    def from_asset(cls, weights_path: str = WEIGHTS_PATH) -> "DigitsClassifier":
        """The classifier that ships with hf_ddpm (or other weights of benchmarks/train_digits_classifier.py)."""
        from safetensors.torch import load_file

        model = cls()
        model.load_state_dict(load_file(weights_path))
        return model.eval().requires_grad_(False)


@torch.no_grad()
def classify(model: DigitsClassifier, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """
    Float64 features [N x 64] and class probabilities [N x 10] of images (uint8 [N x 8 x 8 x 1] or a float tensor
    [N x 1 x 8 x 8] in [0, 1]).
    """
    device = next(model.parameters()).device
    features = torch.cat([model.features(batch.to(device)) for batch in to_unit_images(images).split(batch_size)])
    probabilities = torch.softmax(model.head(features).double(), dim=1)
    return features.double().cpu().numpy(), probabilities.cpu().numpy()


def digits_sample_statistics(probabilities: np.ndarray) -> dict:
    """
    What the classifier says of samples, from their class probabilities [N x 10]: `mean_confidence` (the mean largest
    probability: high for crisp digits), `class_coverage` (the classes predicted for at least 5% of the samples, half
    a uniform share: 10 for a model that makes every digit, fewer for a mode-dropping one), `class_entropy_bits` (of
    the predicted classes, log2(10) = 3.32 at most) and `class_histogram`.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    histogram = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1]) / len(probabilities)
    nonzero = histogram[histogram > 0]
    return {
        "mean_confidence": float(probabilities.max(axis=1).mean()),
        "class_coverage": int((histogram >= 0.05).sum()),
        "class_entropy_bits": float(-(nonzero * np.log2(nonzero)).sum()),
        "class_histogram": histogram.tolist(),
    }
