# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The variational bound of a dataset split in bits per dimension (Ho et al. 2020 eq. 5; Nichol & Dhariwal 2021 eq. 4-6).

-log p(x_0) <= L_T + sum_{t=1}^{T-1} L_{t-1} + L_0, each term averaged over the pixels and converted to bits:
the prior KL L_T, every KL term between the true posterior and the model's reverse step, and the discretized
Gaussian decoder NLL L_0. The per-image bound comes from `DDPMPosteriorPipeline.bits_per_dim`; this module averages
it over a split and reports the standard error of the mean, which covers both the spread between images and the
Monte-Carlo draw of x_t ~ q(x_t | x_0) for each term.

With `num_timesteps=K` the T - 1 KL terms are estimated by stratified sampling: [1, T) is cut into K - 1 strata that
grow geometrically with t (the first ones single timesteps, where the terms are large and change fast), each image
draws its own timestep in each stratum, and each drawn term is weighted by its stratum's size (the decoder term is
always exact). The estimate is unbiased and about T/K times faster, and since the draws are independent between
images, the standard error over the images covers the choice of timesteps as well.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class DatasetBitsPerDim:
    """
    The bound of a set of images, in bits/dim.

    Args:
        bits_per_dim (`float`): the mean bound over the images.
        standard_error (`float`): the standard error of that mean.
        num_images (`int`): N.
        num_timesteps (`int`): how many timesteps were evaluated (the decoder included); T for the full bound.
        prior (`float`): the mean prior term L_T.
        decoder (`float`): the mean decoder term L_0.
        kl (`float`): the mean of the (stride-weighted) sum of the KL terms L_1 .. L_{T-1}.
        seed (`int`): the seed of the noise draws.
        per_image (`np.ndarray`): [N] the bound of each image.
        timesteps (`np.ndarray`): [N x T'] each image's evaluated timesteps, ascending.
        weights (`np.ndarray`): [T'] the weight of each term in the sum (the stratum size; 1 for the full bound).
        terms (`np.ndarray`): [T'] each evaluated term (each stratum's, with `num_timesteps`), averaged over the
            images; column 0 is the decoder.
    """

    bits_per_dim: float
    standard_error: float
    num_images: int
    num_timesteps: int
    prior: float
    decoder: float
    kl: float
    seed: int
    per_image: np.ndarray
    timesteps: np.ndarray
    weights: np.ndarray
    terms: np.ndarray

    def summary(self) -> dict:
        """The JSON-able scalars (for eval_results.json)."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}


def dataset_bits_per_dim(
    pipeline,
    images: torch.Tensor | np.ndarray,
    seed: int = 0,
    batch_size: int = 256,
    num_timesteps: int | None = None,
    clip_denoised: bool = True,
    show_progress: bool = True,
) -> DatasetBitsPerDim:
    """
    The variational bound of `images` under the pipeline's model, averaged over the images.

    Args:
        pipeline ([`DDPMPosteriorPipeline`]): the model; its scheduler must be a `DDPMPosteriorScheduler`.
        images (`torch.Tensor` or `np.ndarray`): [N x C x H x W] in [-1, 1], or uint8 [N x H x W x C].
        seed (`int`, defaults to 0): the seed of the draws of x_t; one seed and `batch_size`, one result.
        batch_size (`int`, defaults to 256): (image, timestep) pairs per UNet call.
        num_timesteps (`int`, *optional*): evaluate this many timesteps per image, the decoder and one per stratum
            of the KL terms (see the module docstring).
        clip_denoised (`bool`, defaults to `True`): clip the x_0 prediction to [-1, 1], as Improved DDPM does.
        show_progress (`bool`, defaults to `True`): show a progress bar.

    Returns:
        [`DatasetBitsPerDim`]
    """
    if len(images) < 2:
        raise ValueError(f"`images` must hold at least 2 images for a standard error, got {len(images)}.")
    generator = torch.Generator("cpu").manual_seed(seed)
    output = pipeline.bits_per_dim(
        images,
        generator=generator,
        batch_size=batch_size,
        num_timesteps=num_timesteps,
        clip_denoised=clip_denoised,
        show_progress=show_progress,
    )
    per_image = output.bpd.double().numpy()
    terms = output.vb_bpd.double()  # [N x T']
    prior = output.prior_bpd.double().numpy()
    # the KL terms L_1 .. L_{T-1}, each weighted by its stratum's size (1 for the full bound)
    kl = (terms[:, 1:] * output.weights[1:].double()).sum(dim=1).numpy()
    return DatasetBitsPerDim(
        bits_per_dim=float(per_image.mean()),
        standard_error=float(output.standard_error),
        num_images=len(per_image),
        num_timesteps=terms.shape[1],
        prior=float(prior.mean()),
        decoder=float(terms[:, 0].mean()),
        kl=float(kl.mean()),
        seed=seed,
        per_image=per_image,
        timesteps=output.timesteps.numpy(),
        weights=output.weights.numpy(),
        terms=terms.mean(dim=0).numpy(),
    )
