# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The Frechet distance between Gaussians fitted to two feature sets (FID: Heusel et al. 2017, arXiv 1706.08500), in
float64, and two feature spaces: Inception-v3 through torchmetrics (FID) and DINOv2's CLS token through transformers
(FD_DINOv2: Stein et al. 2023, arXiv 2306.04675). Images are float tensors [N x C x H x W] in [0, 1].
"""

import os

import numpy as np
import torch

from ..images import to_uint8

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean [D] and the unbiased (N - 1) covariance [D x D] of features [N x D], N >= 2, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"`features` must be [N x D] with N >= 2, got shape {features.shape}.")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)) between N(mu1, sigma1) and N(mu2, sigma2).

    No general matrix square root: with R = sigma1^(1/2), sigma1 sigma2 is similar to R sigma2 R, which is symmetric
    positive semi-definite, so two symmetric eigendecompositions give the trace. Unlike `scipy.linalg.sqrtm`, this
    never returns complex parts or NaN for the singular covariances of few samples.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    root1 = (eigenvectors * np.sqrt(eigenvalues.clip(min=0))) @ eigenvectors.T  # round-off negatives count as 0
    trace_sqrt_product = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product
    return float(max(distance, 0.0))


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """The Frechet distance between the Gaussians fitted to features [N1 x D] and [N2 x D]."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


def bootstrap_frechet_distances(
    features: np.ndarray, reference_features: np.ndarray, num_resamples: int = 200, seed: int = 0
) -> np.ndarray:
    """
    The distances [B] to the reference of B = `num_resamples` bootstrap resamples of `features` [N x D] (N rows drawn
    with replacement): their standard deviation is the standard error of the distance over the draw of N samples. The
    reference stays fixed, as it is for every model scored against it.
    """
    if num_resamples < 2:
        raise ValueError(f"`num_resamples` must be an int >= 2, got {num_resamples!r}.")
    features = np.asarray(features, dtype=np.float64)
    reference = gaussian_statistics(reference_features)
    rows = np.random.default_rng(seed).integers(0, len(features), size=(num_resamples, len(features)))
    return np.array([frechet_distance(*gaussian_statistics(features[r]), *reference) for r in rows])


def to_unit_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images [N x H x W x C] as a float tensor [N x C x H x W] in [0, 1]; such a tensor as it is."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        if images.ndim != 4 or images.min() < 0 or images.max() > 1:
            raise ValueError("Float image tensors must be [N x C x H x W] in [0, 1].")
        return images
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise ValueError(
            f"Images must be uint8 [N x H x W x C] or float [N x C x H x W]; got {array.dtype} {array.shape}."
        )
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0


def _rgb(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] not in (1, 3):
        raise ValueError(f"Images must have 1 or 3 channels for this feature space, got {images.shape[1]}.")
    return images.expand(-1, 3, -1, -1)


def resolve_inception_weights(path: str | None = None) -> str:
    """
    The FID Inception weights file (by default in torch.hub's checkpoints folder, where torchmetrics caches it),
    checked to exist: torch-fidelity would otherwise download it, which hangs or fails without a network.
    """
    default = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_FILE)
    path = path or default
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"FID needs the Inception-v3 weights {INCEPTION_WEIGHTS_FILE}, not found at {path}. Download"
            f" {INCEPTION_WEIGHTS_URL} where there is network and put it at {default}"
            " (torch.hub's checkpoints folder; set TORCH_HOME to move it) or pass --inception_weights PATH."
        )
    return path


class InceptionFID:
    """FID with torchmetrics' `FrechetInceptionDistance` (2048-d pool3 features), from a local weights file."""

    def __init__(self, weights_path: str | None = None, device="cpu", batch_size: int = 64):
        self.weights_path = resolve_inception_weights(weights_path)  # before the slow import
        from torchmetrics.image.fid import FrechetInceptionDistance  # says what to install without torch-fidelity

        self.metric = FrechetInceptionDistance(normalize=True, feature_extractor_weights_path=self.weights_path)
        self.metric.to(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, real_images: torch.Tensor, generated_images: torch.Tensor) -> float:
        self.metric.reset()
        for images, real in ((real_images, True), (generated_images, False)):
            for batch in images.split(self.batch_size):
                self.metric.update(_rgb(batch).to(self.metric.device), real=real)
        return float(self.metric.compute())


class Dinov2Features:
    """
    DINOv2's CLS token after the final layer norm (`pooler_output`), float64 [N x hidden_size], as FD_DINOv2 uses,
    from a folder with the model and its image processor or a Hub id (from the cache when the Hub is unreachable).
    """

    def __init__(self, model_name_or_path: str = "facebook/dinov2-base", device="cpu", batch_size: int = 64):
        from transformers import AutoImageProcessor, AutoModel

        try:
            self.model = AutoModel.from_pretrained(model_name_or_path).to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as error:  # transformers' message for a missing folder speaks of repo ids
            raise OSError(
                f"Could not load DINOv2 from {model_name_or_path!r} ({str(error).strip().splitlines()[0]}): pass"
                " --dinov2_model a saved model folder, or download the model where there is network"
                f" (`hf download {model_name_or_path}`)."
            ) from error
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        features = []
        for batch in images.split(self.batch_size):
            pixels = list(to_uint8(_rgb(batch).permute(0, 2, 3, 1).cpu().numpy()))  # [H x W x 3] each
            inputs = self.processor(images=pixels, return_tensors="pt", input_data_format="channels_last")
            pixel_values = inputs["pixel_values"].to(self.model.device, self.model.dtype)
            features.append(self.model(pixel_values=pixel_values).pooler_output.double().cpu())
        return torch.cat(features).numpy()
