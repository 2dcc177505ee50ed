# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The Frechet distance between two sets of images in a feature space, and the feature spaces.

FD(N(mu_1, S_1), N(mu_2, S_2)) = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))   (Dowson & Landau 1982;
FID: Heusel et al. 2017, arXiv 1706.08500). Computed in float64 without a general matrix square root: with
R = S_1^(1/2), the matrix S_1 S_2 is similar to R S_2 R, which is symmetric positive semi-definite, so
Tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i(R S_2 R)) and two symmetric eigendecompositions suffice. Unlike
`scipy.linalg.sqrtm` this never returns complex parts or NaN for the singular covariances of few samples.

Feature spaces:
    - Inception-v3 pool3 (FID) through torchmetrics' `FrechetInceptionDistance`, with weights from a local file only;
    - DINOv2's CLS token (FD_DINOv2, Stein et al. 2023, arXiv 2306.04675) through transformers' `AutoModel`;
    - the penultimate layer of the digits classifier that ships with hf_ddpm (see `digits_classifier.py`).
Every extractor takes images as a float tensor [N x C x H x W] in [0, 1] and returns float64 features [N x D].
"""

import os

import numpy as np
import torch

from ..images import to_uint8

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
DEFAULT_DINOV2_MODEL = "facebook/dinov2-base"


# ----------------------------------------------------------------------------------------------------------------
# The distance
# ----------------------------------------------------------------------------------------------------------------


def gaussian_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """
    The mean and covariance of features, in float64, with the unbiased (N - 1) covariance as FID uses.

    Args:
        features (`np.ndarray` or `torch.Tensor`): [N x D], N >= 2.

    Returns:
        `tuple`: mu [D] and sigma [D x D].
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"`features` must be [N x D] with N >= 2, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The square root of a symmetric positive semi-definite matrix; round-off negative eigenvalues count as 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """
    The Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
        mu1, mu2 (`np.ndarray`): [D] means.
        sigma1, sigma2 (`np.ndarray`): [D x D] symmetric positive semi-definite covariances.

    Returns:
        `float`: ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)), >= 0 up to round-off.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Means must be [D] and covariances [D x D] with one D; got {mu1.shape}, {sigma1.shape}, {mu2.shape},"
            f" {sigma2.shape}."
        )
    root1 = _psd_sqrt(sigma1)
    # S1 S2 is similar to R S2 R (R = S1^(1/2)): same eigenvalues, and R S2 R is symmetric PSD
    middle = root1 @ sigma2 @ root1
    trace_sqrt_product = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """The Frechet distance between the Gaussians fitted to two feature sets [N1 x D] and [N2 x D]."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


def bootstrap_frechet_distances(
    features: np.ndarray, reference_features: np.ndarray, num_resamples: int = 200, seed: int = 0
) -> np.ndarray:
    """
    The Frechet distance of `num_resamples` bootstrap resamples of `features` (N rows drawn with replacement) to the
    fixed reference: their standard deviation is the standard error of the distance for N samples (Efron's bootstrap).
    Only the scored set is resampled: the reference is the same for every model compared against it.

    Args:
        features (`np.ndarray`): [N x D] features of the scored images, N >= 2.
        reference_features (`np.ndarray`): [M x D] features of the reference images.
        num_resamples (`int`, defaults to 200): B, the number of resamples.
        seed (`int`, defaults to 0): the seed of the resampling.

    Returns:
        `np.ndarray`: [B] float64 distances.
    """
    if num_resamples < 2:
        raise ValueError(f"`num_resamples` must be an int >= 2, got {num_resamples!r}.")
    features = np.asarray(features, dtype=np.float64)
    mu_reference, sigma_reference = gaussian_statistics(reference_features)
    gaussian_statistics(features)  # the shape check
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(features), size=(num_resamples, len(features)))
    return np.array([frechet_distance(*gaussian_statistics(features[r]), mu_reference, sigma_reference) for r in rows])


# ----------------------------------------------------------------------------------------------------------------
# Image formats
# ----------------------------------------------------------------------------------------------------------------


def to_unit_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """
    uint8 images [N x H x W x C] (or a float tensor [N x C x H x W] in [0, 1], returned as is) as a float tensor
    [N x C x H x W] in [0, 1].
    """
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
    """Grayscale [N x 1 x H x W] repeated to 3 channels; RGB as is."""
    if images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if images.shape[1] != 3:
        raise ValueError(f"Images must have 1 or 3 channels for this feature space, got {images.shape[1]}.")
    return images


# ----------------------------------------------------------------------------------------------------------------
# Feature spaces
# ----------------------------------------------------------------------------------------------------------------


def resolve_inception_weights(path: str | os.PathLike | None = None) -> str:
    """
    The FID Inception weights file, checked to exist, without any download: torch-fidelity would otherwise fetch it
    from GitHub, which hangs or fails where there is no network.

    Args:
        path (`str`, *optional*): the weights file; by default torch.hub's checkpoints folder, where torch-fidelity
            (and so torchmetrics) caches it.

    Raises:
        `FileNotFoundError`: with where to put the file.
    """
    default = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_FILE)
    path = os.fspath(path) if path is not None else default
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"FID needs the Inception-v3 weights {INCEPTION_WEIGHTS_FILE}, not found at {path}. Download"
            f" {INCEPTION_WEIGHTS_URL} where there is network and put it at {default}"
            " (torch.hub's checkpoints folder; set TORCH_HOME to move it) or pass --inception_weights PATH."
        )
    return path


class InceptionFID:
    """
    FID with torchmetrics' `FrechetInceptionDistance` (2048-d pool3 features), loading the weights from a local file.

    Args:
        weights_path (`str`, *optional*): the Inception weights; torch.hub's checkpoints folder when `None`.
        device (`str` or `torch.device`, defaults to `"cpu"`).
        batch_size (`int`, defaults to 64): images per forward pass.
    """

    def __init__(self, weights_path: str | None = None, device="cpu", batch_size: int = 64):
        self.weights_path = resolve_inception_weights(weights_path)
        from torchmetrics.image.fid import FrechetInceptionDistance

        # without torch-fidelity (where the network lives) torchmetrics says what to install
        self.metric = FrechetInceptionDistance(
            feature=2048, normalize=True, feature_extractor_weights_path=self.weights_path
        ).to(device)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, real_images: torch.Tensor, generated_images: torch.Tensor) -> float:
        """FID between two image sets, float [N x C x H x W] in [0, 1]."""
        self.metric.reset()
        for images, real in ((real_images, True), (generated_images, False)):
            for start in range(0, images.shape[0], self.batch_size):
                batch = _rgb(images[start : start + self.batch_size]).to(self.device)
                self.metric.update(batch, real=real)
        return float(self.metric.compute())


class Dinov2Features:
    """
    DINOv2 CLS-token features (after the final layer norm: `pooler_output`), as FD_DINOv2 uses.

    Args:
        model_name_or_path (`str`, defaults to `"facebook/dinov2-base"`):
            A local folder with the model and its image processor config, or a Hub id (downloaded, or read from the
            local cache when the Hub cannot be reached; `HF_HUB_OFFLINE=1` skips the network).
        device (`str` or `torch.device`, defaults to `"cpu"`).
        batch_size (`int`, defaults to 64): images per forward pass.
        revision (`str`, *optional*): the Hub revision.
    """

    def __init__(
        self, model_name_or_path: str = DEFAULT_DINOV2_MODEL, device="cpu", batch_size: int = 64, revision=None
    ):
        from transformers import AutoImageProcessor, AutoModel

        try:  # a Hub id is read from the local cache when the Hub cannot be reached
            self.model = AutoModel.from_pretrained(model_name_or_path, revision=revision)
            self.processor = AutoImageProcessor.from_pretrained(model_name_or_path, revision=revision)
        except (OSError, ValueError) as error:
            raise OSError(
                f"Could not load DINOv2 from {model_name_or_path!r} ({str(error).strip().splitlines()[0]}): pass"
                " --dinov2_model a saved model folder, or download the model where there is network"
                f" (`hf download {model_name_or_path}`)."
            ) from error
        self.model.to(device).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Features [N x hidden_size] (float64) of images, float [N x C x H x W] in [0, 1]."""
        features = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = _rgb(images[start : start + self.batch_size].cpu())
            uint8 = to_uint8(batch.permute(0, 2, 3, 1).numpy())  # [n x H x W x 3]
            inputs = self.processor(images=list(uint8), return_tensors="pt", input_data_format="channels_last")
            pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)
            features.append(self.model(pixel_values=pixel_values).pooler_output.double().cpu())
        return torch.cat(features).numpy()
