"""hf_ddpm.evaluation: bits/dim against an independent computation, Frechet distances against closed forms, the
digits classifier asset, fail-fast FID, DINOv2 features, and `hf-ddpm eval` end to end in a subprocess."""

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput
from scipy import special

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm._digits import load_digits
from hf_ddpm.evaluation.data import load_images
from hf_ddpm.evaluation.digits_classifier import CONFIG_PATH, DigitsClassifier, classify, digits_sample_statistics
from hf_ddpm.evaluation.frechet import (
    INCEPTION_WEIGHTS_FILE,
    Dinov2Features,
    bootstrap_frechet_distances,
    frechet_distance,
    frechet_distance_of_features,
    gaussian_statistics,
    resolve_inception_weights,
)
from hf_ddpm.evaluation.metrics import fd_digits, fd_dinov2, summarize_bits_per_dim, write_eval_results
from hf_ddpm.pipeline_ddpm_posterior import bound_strata_edges
from hf_ddpm.sampling import generate_samples, with_variance_type

LOG2 = math.log(2.0)


def tiny_unet(out_channels: int = 1, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


def tiny_pipeline(out_channels: int = 1, num_train_timesteps: int = 20) -> DDPMPosteriorPipeline:
    variance_type = "learned_range" if out_channels == 2 else "fixed_small"
    scheduler = DDPMPosteriorScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2", variance_type=variance_type
    )
    return DDPMPosteriorPipeline(unet=tiny_unet(out_channels), scheduler=scheduler)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("models") / "tiny-digits")
    tiny_pipeline().save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# The Frechet distance
# ----------------------------------------------------------------------------------------------------------------


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert frechet_distance(m1, np.diag(s1), m1, np.diag(s1)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    value = frechet_distance(m1, s1, m2, s2)
    assert value == pytest.approx(expected, rel=1e-9)
    assert value == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-9)  # symmetric


def test_frechet_distance_of_singular_covariances_is_finite():
    # 5 samples in 16 dimensions: rank-4 covariances, where sqrtm-based code can return complex parts or NaN
    rng = np.random.default_rng(2)
    value = frechet_distance_of_features(rng.normal(size=(5, 16)), rng.normal(size=(5, 16)) + 1.0)
    assert math.isfinite(value) and value > 16 * 0.5


def test_frechet_distance_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    m1, m2, s1, s2 = np.zeros(3), np.array([1.0, -0.5, 0.0]), np.array([1.0, 0.25, 4.0]), np.array([0.5, 1.0, 1.0])
    x1 = m1 + np.sqrt(s1) * rng.normal(size=(40000, 3))
    x2 = m2 + np.sqrt(s2) * rng.normal(size=(40000, 3))
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance_of_features(x1, x2) == pytest.approx(expected, rel=0.03)
    mu, sigma = gaussian_statistics(x1)
    np.testing.assert_allclose(sigma, np.cov(x1, rowvar=False), rtol=1e-12)


def gaussian_features(rng, count: int, shift: float) -> np.ndarray:
    """[count x 6] features of N(shift, S) with a fixed full covariance S."""
    root = np.linalg.cholesky(np.full((6, 6), 0.3) + 0.7 * np.eye(6))
    return shift + rng.standard_normal((count, 6)) @ root.T


def test_bootstrap_standard_error_matches_the_spread_of_the_distance_over_repeated_draws():
    """
    The bootstrap standard error of one set of N samples against the spread of the distance over 300 independent
    sets of N: within 20% where the distance is well above its finite-sample floor (the regime of comparing models),
    and never optimistic near the floor, where the resamples' duplicated rows inflate it (measured: +60% there).
    """
    rng = np.random.default_rng(0)
    reference = gaussian_features(rng, 4000, shift=0.0)
    for shift, (low, high) in [(0.3, (0.8, 1.2)), (0.0, (0.9, 2.0))]:
        spread = np.std(
            [frechet_distance_of_features(gaussian_features(rng, 400, shift), reference) for _ in range(300)]
        )
        errors = [
            bootstrap_frechet_distances(gaussian_features(rng, 400, shift), reference, 200, seed).std(ddof=1)
            for seed in range(10)
        ]
        assert low < np.mean(errors) / spread < high, (shift, np.mean(errors), spread)
    features = gaussian_features(rng, 50, shift=0.3)
    first, again = (bootstrap_frechet_distances(features, reference, 20, seed=1) for _ in range(2))
    assert first.shape == (20,) and np.array_equal(first, again)  # reproducible for a seed
    assert not np.array_equal(first, bootstrap_frechet_distances(features, reference, 20, seed=2))
    with pytest.raises(ValueError, match="`num_resamples` must be an int >= 2"):
        bootstrap_frechet_distances(features, reference, 1)


def test_gaussian_statistics_need_two_rows_of_features():
    with pytest.raises(ValueError, match=r"\[N x D\] with N >= 2"):
        gaussian_statistics(np.zeros((1, 3)))


# ----------------------------------------------------------------------------------------------------------------
# Bits/dim: the Bayes-optimal model of Gaussian data against an independent computation of the bound
# ----------------------------------------------------------------------------------------------------------------

DATA_STD = 0.25
BETAS = dict(num_train_timesteps=20, beta_start=0.001, beta_end=0.4)


class GaussianOptimalDenoiser(ModelMixin, ConfigMixin):
    """eps*(x_t, t) = sqrt(1 - abar_t) x_t / (abar_t s^2 + 1 - abar_t): E[eps | x_t] for x_0 ~ N(0, s^2 I)."""

    @register_to_config
    def __init__(self, alphas_cumprod=(), data_variance=1.0, scale=1.0, in_channels=1, out_channels=1, sample_size=8):
        super().__init__()
        self.register_buffer("alpha_bar", torch.tensor(alphas_cumprod, dtype=torch.float64))

    def forward(self, sample, timestep):
        alpha_bar = self.alpha_bar[timestep].reshape(-1, 1, 1, 1)
        eps = (1 - alpha_bar).sqrt() * sample.double() / (alpha_bar * self.config.data_variance + 1 - alpha_bar)
        return UNet2DOutput(sample=(self.config.scale * eps).to(sample.dtype))


def gaussian_pipeline(scale: float = 1.0) -> DDPMPosteriorPipeline:
    scheduler = DDPMPosteriorScheduler(**BETAS, variance_type="fixed_small", clip_sample=False)
    betas = np.linspace(BETAS["beta_start"], BETAS["beta_end"], BETAS["num_train_timesteps"])
    model = GaussianOptimalDenoiser(np.cumprod(1 - betas).tolist(), DATA_STD**2, scale)
    return DDPMPosteriorPipeline(unet=model, scheduler=scheduler)


def gaussian_images(count: int, seed: int) -> np.ndarray:
    """x_0 ~ N(0, s^2 I) [N x 64], redrawing the (~1 in 250) images with a pixel outside [-1, 1]."""
    rng = np.random.default_rng(seed)
    images = rng.normal(scale=DATA_STD, size=(count, 64))
    while (bad := np.abs(images).max(axis=1) > 1).any():
        images[bad] = rng.normal(scale=DATA_STD, size=(int(bad.sum()), 64))
    return images


def independent_bound(x0: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """
    The bound of images x0 [N x D] under the Gaussian-optimal model with sigma_t^2 = beta-tilde_t, in float64 numpy,
    straight from Ho et al. eq. 5-7, 13 and 15: per image bits/dim, and the per-image KL terms [N x T].
    """
    betas = np.linspace(BETAS["beta_start"], BETAS["beta_end"], BETAS["num_train_timesteps"])
    num_steps, s2 = len(betas), DATA_STD**2
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    beta_tilde = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
    beta_tilde[0] = beta_tilde[1]  # the decoder's variance (beta-tilde_0 = 0), as Improved DDPM clips it
    coef_x0 = betas * np.sqrt(alpha_bar_prev) / (1 - alpha_bar)
    coef_xt = (1 - alpha_bar_prev) * np.sqrt(1 - betas) / (1 - alpha_bar)
    terms = np.zeros((x0.shape[0], num_steps))
    for t in range(num_steps):
        x_t = np.sqrt(alpha_bar[t]) * x0 + np.sqrt(1 - alpha_bar[t]) * rng.standard_normal(x0.shape)
        eps = np.sqrt(1 - alpha_bar[t]) * x_t / (alpha_bar[t] * s2 + 1 - alpha_bar[t])
        x0_hat = (x_t - np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(alpha_bar[t])
        model_mean = coef_x0[t] * x0_hat + coef_xt[t] * x_t
        if t == 0:  # the discretized decoder: the mass of the bin of width 2/255 around x0
            sigma = np.sqrt(beta_tilde[0])
            upper, lower = (x0 + 1 / 255 - model_mean) / sigma, (x0 - 1 / 255 - model_mean) / sigma
            log_p = np.log(special.ndtr(upper) - special.ndtr(lower))
            # the edge bins, below the first cut between levels and above the last, reach to -inf and +inf
            first_cut, last_cut = -1 + 1 / 255, 1 - 1 / 255
            log_p = np.where(
                x0 < first_cut, special.log_ndtr(upper), np.where(x0 > last_cut, special.log_ndtr(-lower), log_p)
            )
            terms[:, 0] = -log_p.mean(axis=1) / LOG2
        else:  # KL of two Gaussians with one variance: (mu_true - mu_model)^2 / (2 sigma^2)
            true_mean = coef_x0[t] * x0 + coef_xt[t] * x_t
            terms[:, t] = ((true_mean - model_mean) ** 2 / (2 * beta_tilde[t])).mean(axis=1) / LOG2
    a = alpha_bar[-1]  # KL(N(sqrt(a) x0, 1 - a) || N(0, 1))
    prior = (0.5 * (-np.log(1 - a) + (1 - a) + a * x0**2 - 1)).mean(axis=1) / LOG2
    return prior + terms.sum(axis=1), terms


def bound(pipeline, images, seed: int = 0, **kwargs) -> SimpleNamespace:
    """`pipeline.bits_per_dim` of `images` for one seed: the summary eval_results.json records, and per image."""
    generator = torch.Generator().manual_seed(seed)
    output = pipeline.bits_per_dim(images, generator=generator, show_progress=False, **kwargs)
    return SimpleNamespace(
        **summarize_bits_per_dim(output),
        per_image=output.bpd.double().numpy(),
        terms=output.vb_bpd.double().mean(dim=0).numpy(),  # each evaluated term, averaged over the images
        timesteps=output.timesteps.numpy(),
        weights=output.weights.numpy(),
    )


def test_bits_per_dim_of_the_bayes_optimal_gaussian_model_matches_an_independent_computation():
    x0 = gaussian_images(96, seed=0)
    images = torch.from_numpy(x0).reshape(-1, 1, 8, 8)
    result = bound(gaussian_pipeline(), images, seed=0, clip_denoised=False)
    reference, reference_terms = independent_bound(x0, np.random.default_rng(1))

    assert result.num_images == 96 and result.num_timesteps == 20
    assert result.standard_error == pytest.approx(result.per_image.std(ddof=1) / math.sqrt(96), rel=1e-6)
    # same images, independent noise: the paired difference has only the Monte-Carlo noise of the x_t draws
    difference = result.per_image - reference
    paired_error = difference.std(ddof=1) / math.sqrt(len(difference))
    assert abs(difference.mean()) < 4 * paired_error
    reference_error = reference.std(ddof=1) / math.sqrt(len(reference))
    assert abs(result.value - reference.mean()) < 3 * math.hypot(result.standard_error, reference_error)
    # each part against its independent counterpart, not against the remainder of the others
    a = np.cumprod(1 - np.linspace(BETAS["beta_start"], BETAS["beta_end"], BETAS["num_train_timesteps"]))[-1]
    exact_prior = (0.5 * (-np.log(1 - a) + (1 - a) + a * x0**2 - 1)).mean(axis=1) / LOG2  # KL(q(x_T|x_0) || N(0, I))
    assert result.prior == pytest.approx(exact_prior.mean(), abs=1e-7)  # float32 loses digits of the tiny prior
    for mine, theirs in [(result.decoder, reference_terms[:, 0]), (result.kl, reference_terms[:, 1:].sum(axis=1))]:
        # unpaired (independent noise), so twice the variance of one side at most
        assert abs(mine - theirs.mean()) < 4 * math.sqrt(2) * theirs.std(ddof=1) / math.sqrt(len(theirs))

    expected_kl, expected_prior = expected_gaussian_terms()
    expected_kl = expected_kl[1:]
    kl_error = (result.per_image - result.prior).std(ddof=1) / math.sqrt(96)
    assert result.kl == pytest.approx(expected_kl.sum(), abs=4 * kl_error)
    assert reference_terms[:, 1:].sum(axis=1).mean() == pytest.approx(expected_kl.sum(), abs=4 * kl_error)
    assert result.prior == pytest.approx(expected_prior, rel=0.05)
    np.testing.assert_allclose(result.terms[1:], expected_kl, rtol=0.1)  # each term, to its own noise


def expected_gaussian_terms() -> tuple[np.ndarray, float]:
    """
    E[L_{t-1}] in closed form for x_0 ~ N(0, s^2 I) under the Bayes-optimal model with sigma_t^2 = beta-tilde_t:
    c_t^2 Var(x_0 | x_t) / (2 beta-tilde_t) per dimension, c_t the x_0 coefficient of the posterior mean and
    Var(x_0 | x_t) = s^2 (1 - abar) / (abar s^2 + 1 - abar); and the prior's
    E[KL(N(sqrt(abar) x_0, 1 - abar) || N(0, 1))].

    Returns:
        `tuple`: the expected KL terms [T] in bits/dim (entry 0, the decoder, is NaN), and the expected prior.
    """
    betas = np.linspace(BETAS["beta_start"], BETAS["beta_end"], BETAS["num_train_timesteps"])
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    beta_tilde = betas[1:] * (1 - alpha_bar_prev[1:]) / (1 - alpha_bar[1:])
    coef_x0 = betas[1:] * np.sqrt(alpha_bar_prev[1:]) / (1 - alpha_bar[1:])
    s2 = DATA_STD**2
    posterior_variance = s2 * (1 - alpha_bar[1:]) / (alpha_bar[1:] * s2 + 1 - alpha_bar[1:])
    kl = np.concatenate([[np.nan], coef_x0**2 * posterior_variance / (2 * beta_tilde) / LOG2])
    a = alpha_bar[-1]
    return kl, 0.5 * (-np.log(1 - a) + (1 - a) + a * s2 - 1) / LOG2


def test_the_bound_is_lowest_for_the_bayes_optimal_model():
    images = torch.from_numpy(gaussian_images(64, seed=2)).reshape(-1, 1, 8, 8)
    optimal = bound(gaussian_pipeline(), images, seed=0, clip_denoised=False)
    for scale in (0.7, 1.3):
        # the same seed draws the same x_t: the paired difference is the models' alone
        worse = bound(gaussian_pipeline(scale), images, seed=0, clip_denoised=False)
        difference = worse.per_image - optimal.per_image
        assert difference.mean() > 4 * difference.std(ddof=1) / math.sqrt(len(difference))


def test_strided_bound_estimate_weights_each_drawn_term_by_its_stratum():
    images = torch.from_numpy(gaussian_images(96, seed=3)).reshape(-1, 1, 8, 8)
    strided = bound(gaussian_pipeline(), images, seed=0, num_timesteps=7, clip_denoised=False)
    # each image draws one timestep in each of 6 strata of [1, 20), each term weighted by its stratum's size
    edges = bound_strata_edges(BETAS["num_train_timesteps"], 6)
    kl_timesteps = strided.timesteps[:, 1:]
    assert strided.num_timesteps == 7 and (strided.timesteps[:, 0] == 0).all()
    assert ((edges[:-1] <= kl_timesteps) & (kl_timesteps < edges[1:])).all()
    np.testing.assert_array_equal(strided.weights, [1, *np.diff(edges)])
    expected_kl, _ = expected_gaussian_terms()
    kl_error = (strided.per_image - strided.prior - strided.decoder).std(ddof=1) / math.sqrt(96)
    # given the drawn timesteps, the terms match their closed-form expectations...
    expected_given_draws = (strided.weights[1:] * expected_kl[kl_timesteps]).sum(axis=1).mean()
    assert strided.kl == pytest.approx(expected_given_draws, abs=4 * kl_error)
    # ...and over the draws too: the estimate is unbiased for the full sum, with a standard error that covers the
    # choice of timesteps (one shared draw for all images would have no such error bar)
    assert strided.kl == pytest.approx(expected_kl[1:].sum(), abs=4 * kl_error)
    again = bound(gaussian_pipeline(), images, seed=0, num_timesteps=7, clip_denoised=False)
    assert again.value == strided.value  # reproducible for a seed
    other_seed = bound(gaussian_pipeline(), images, seed=1, num_timesteps=7, clip_denoised=False)
    assert other_seed.value != strided.value


def train_l_simple(pipeline: DDPMPosteriorPipeline, images: np.ndarray, steps: int, seed: int = 0) -> None:
    """A few steps of L_simple (Ho et al. eq. 14) on uint8 images [N x 8 x 8 x 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(pipeline.unet.parameters(), lr=3e-3)
    pipeline.unet.train()
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    for _ in range(steps):
        x0 = x[torch.randint(0, len(x), (64,), generator=generator)]
        t = torch.randint(0, num_train_timesteps, (64,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        loss = F.mse_loss(pipeline.unet(pipeline.scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipeline.unet.eval()


def test_the_bound_decreases_when_the_model_trains():
    pipeline = tiny_pipeline(num_train_timesteps=50)
    train_images, _ = load_digits("train")
    held_out = load_digits("test")[0][:128]
    kwargs = dict(seed=0, num_timesteps=10, batch_size=640)
    before = bound(pipeline, held_out, **kwargs)
    train_l_simple(pipeline, train_images, steps=120)
    after = bound(pipeline, held_out, **kwargs)
    # same images and seed, so the same x_t draws: the paired difference is the training's
    improvement = before.per_image - after.per_image
    assert improvement.mean() > 4 * improvement.std(ddof=1) / math.sqrt(len(improvement))
    assert after.value < before.value
    # and below the uniform-dequantized baseline: a uniform density over the 256 levels costs exactly 8 bits/dim
    assert after.value < 8.0
    assert after.prior == pytest.approx(before.prior, rel=1e-9)  # the prior does not depend on the model


# ----------------------------------------------------------------------------------------------------------------
# Digits: the split, the classifier asset, fd-digits
# ----------------------------------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint():
    images, labels = load_digits("all")
    train_images, train_labels = load_digits("train")
    test_images, test_labels = load_digits("test")
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert len(train_labels) == 1617 and len(test_labels) == 180
    assert np.abs(np.bincount(test_labels) - np.bincount(labels) * 0.1).max() <= 1  # stratified
    rows = {row.tobytes() for row in train_images.reshape(len(train_images), -1)}
    # sklearn's digits hold a few exact duplicates; the split is by index, so nearly all test images are unseen
    assert sum(row.tobytes() in rows for row in test_images.reshape(len(test_images), -1)) <= 5
    assert np.array_equal(load_digits("test")[0], test_images)
    # the same held-out split as the DDPM's training (hf_ddpm.training.data)
    from hf_ddpm.training.data import load_digits_dataset

    heldout = load_digits_dataset()["test"]
    assert np.array_equal(np.stack([np.asarray(im) for im in heldout["image"]])[..., None], test_images)
    with pytest.raises(ValueError, match="`split` must be one of 'train', 'test', 'all'"):
        load_digits("validation")


def test_digits_classifier_asset_reaches_its_documented_accuracy():
    with open(CONFIG_PATH) as f:
        config = json.load(f)
    model = DigitsClassifier.from_asset()
    test_images, test_labels = load_digits("test")
    correct = int((classify(model, test_images)[1].argmax(axis=1) == test_labels).sum())
    assert correct == config["test_correct"] and config["split"]["num_test"] == len(test_labels) == 180
    assert correct / len(test_labels) == pytest.approx(config["test_accuracy"])
    assert config["test_accuracy"] >= 0.98
    import hf_ddpm.evaluation.digits_classifier as module

    assert f"{100 * config['test_accuracy']:.2f}%" in module.__doc__  # the docstring quotes the measured number


def test_digits_sample_statistics_definitions():
    uniform = np.eye(10)[np.arange(100) % 10] * 0.9 + 0.01  # every class 10 times, confidence 0.91
    stats = digits_sample_statistics(uniform)
    assert stats["class_coverage"] == 10 and stats["class_entropy_bits"] == pytest.approx(math.log2(10))
    assert stats["mean_confidence"] == pytest.approx(0.91) and stats["class_histogram"] == [0.1] * 10
    collapsed = np.eye(10)[np.array([3] * 96 + [4] * 4)]  # class 4 at 4% < 5%: not covered
    stats = digits_sample_statistics(collapsed)
    assert stats["class_coverage"] == 1
    assert stats["class_entropy_bits"] == pytest.approx(-(0.96 * math.log2(0.96) + 0.04 * math.log2(0.04)))


def test_fd_digits_of_real_digits_is_far_below_noise_blur_and_shuffle():
    test_images, _ = load_digits("test")
    x = torch.from_numpy(test_images).permute(0, 3, 1, 2).float() / 255
    generator = torch.Generator().manual_seed(0)
    real = fd_digits(test_images, reference="digits-train")
    noise = fd_digits(torch.rand(x.shape, generator=generator), reference="digits-train")
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    blur = fd_digits(blurred, reference="digits-train")
    shuffled = x.flatten(1)[:, torch.randperm(64, generator=generator)].reshape(x.shape)
    shuffle = fd_digits(shuffled, reference="digits-train")

    assert real["num_samples"] == 180 and real["num_reference"] == 1617
    assert real["value"] < 20
    for other in (noise, blur, shuffle):
        assert other["value"] > 20 * real["value"]
    assert real["class_coverage"] == 10 and real["mean_confidence"] > 0.95
    assert noise["mean_confidence"] < real["mean_confidence"]
    assert real["class_entropy_bits"] > 3.3
    assert fd_digits(test_images, reference=test_images)["value"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="8x8 grayscale"):
        fd_digits(torch.rand(4, 3, 8, 8))


def test_fd_digits_bootstrap_standard_error():
    test_images = load_digits("test")[0]
    plain = fd_digits(test_images, reference="digits-train")
    assert "standard_error" not in plain and "bootstrap" not in plain
    boot = fd_digits(test_images, reference="digits-train", bootstrap=50, seed=3)
    assert boot["value"] == plain["value"]  # the point estimate is the plain distance
    assert boot["standard_error"] > 0
    assert boot["bootstrap"] == 50 and boot["bootstrap_seed"] == 3
    # resamples repeat rows, so their distances sit above the distance of the distinct samples
    assert boot["bootstrap_mean"] > boot["value"]
    again = fd_digits(test_images, reference="digits-train", bootstrap=50, seed=3)
    assert again["standard_error"] == boot["standard_error"]

    with pytest.raises(ValueError, match="`bootstrap` must be 0 \\(none\\) or a number of resamples >= 2"):
        fd_digits(test_images, bootstrap=1)


# ----------------------------------------------------------------------------------------------------------------
# FID: fails fast without weights, never touching the network
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every outgoing connection of this process."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network disabled in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def run_cli_in_process(monkeypatch, argv: list[str]) -> int:
    import hf_ddpm.cli

    monkeypatch.setattr(hf_ddpm.cli, "COMMAND_MODULES", ["hf_ddpm.evaluation.cli"])
    return hf_ddpm.cli.main(argv)


def test_fid_without_weights_fails_fast_with_where_to_put_them(
    saved_pipeline, tmp_path, monkeypatch, capsys, no_network
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected_path = os.path.join(str(tmp_path / "torch-home"), "hub", "checkpoints", INCEPTION_WEIGHTS_FILE)
    with pytest.raises(FileNotFoundError) as error:
        resolve_inception_weights()
    assert expected_path in str(error.value) and "--inception_weights" in str(error.value)

    start = time.perf_counter()
    argv = ["eval", saved_pipeline, "--metric", "fd-digits", "fid", "--num_samples", "4"]
    code = run_cli_in_process(monkeypatch, argv)
    elapsed = time.perf_counter() - start
    stderr = capsys.readouterr().err
    assert code == 2 and elapsed < 3.0  # a file the command needs is missing: exit 2, as for a missing model folder
    assert INCEPTION_WEIGHTS_FILE in stderr and expected_path in stderr and len(stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(saved_pipeline, "eval_results.json"))  # nothing was evaluated
    missing = str(tmp_path / "nowhere.pth")
    assert (
        run_cli_in_process(monkeypatch, ["eval", saved_pipeline, "--metric", "fid", "--inception_weights", missing])
        == 2
    )
    assert f"not found at {missing}" in capsys.readouterr().err
    assert no_network == []


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_fid_with_weights_but_without_torch_fidelity_says_what_to_install(tmp_path, no_network):
    from hf_ddpm.evaluation.frechet import InceptionFID

    weights = tmp_path / INCEPTION_WEIGHTS_FILE
    weights.write_bytes(b"not used: the check comes first")
    with pytest.raises(ImportError, match="pip install torch-fidelity"):
        InceptionFID(str(weights))
    assert no_network == []


# ----------------------------------------------------------------------------------------------------------------
# fd-dinov2 with a tiny random DINOv2
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> str:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = str(tmp_path_factory.mktemp("tiny-dinov2"))
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14
    )
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 28},
        crop_size={"height": 28, "width": 28},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


def test_fd_dinov2_is_zero_for_identical_sets_and_positive_for_different_ones(tiny_dinov2, tmp_path, no_network):
    extractor = Dinov2Features(tiny_dinov2, batch_size=64)
    digits = load_digits("test")[0][:120]
    x = torch.from_numpy(digits).permute(0, 3, 1, 2).float() / 255
    same = fd_dinov2(x, digits, extractor)
    assert same["value"] == pytest.approx(0.0, abs=1e-8) and same["num_samples"] == 120
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    different = fd_dinov2(noise, digits, extractor)
    other_digits = fd_dinov2(load_digits("train")[0][:120], digits, extractor)
    assert different["value"] > 10 * other_digits["value"] > 0
    features = extractor(x[:3])
    assert features.shape == (3, 32) and features.dtype == np.float64
    assert no_network == []
    with pytest.raises(OSError, match="Could not load DINOv2 from"):
        Dinov2Features(str(tmp_path))  # a folder without a model


# ----------------------------------------------------------------------------------------------------------------
# Samples, variance override, results file, data loading
# ----------------------------------------------------------------------------------------------------------------


def test_variance_type_override_rebuilds_the_scheduler_and_refuses_learned_for_fixed_models():
    pipeline = tiny_pipeline()
    large = with_variance_type(pipeline, "fixed_large")
    assert large.scheduler.config.variance_type == "fixed_large" and large.unet is pipeline.unet
    assert pipeline.scheduler.config.variance_type == "fixed_small"  # the original is untouched
    assert large.scheduler.config.num_train_timesteps == 20
    with pytest.raises(ValueError, match="needs a UNet with learned variances"):
        with_variance_type(pipeline, "learned_range")
    with pytest.raises(ValueError, match="must be one of 'fixed_small'"):
        with_variance_type(pipeline, "small")
    learned = tiny_pipeline(out_channels=2)
    assert with_variance_type(learned, "fixed_small").scheduler.config.variance_type == "fixed_small"


def test_generate_samples_is_reproducible_and_quantized():
    pipeline = tiny_pipeline()
    first, second, other = (
        generate_samples(pipeline, 6, num_inference_steps=5, batch_size=4, seed=seed, show_progress=False).images
        for seed in (3, 3, 4)
    )
    assert first.shape == (6, 1, 8, 8) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert torch.equal(first * 255, (first * 255).round())
    # the first batch is what the pipeline itself draws with the same generator
    direct = pipeline(
        batch_size=4, generator=torch.Generator().manual_seed(3), num_inference_steps=5, output_type="pt"
    ).images
    torch.testing.assert_close(first[:4], (direct * 255).round() / 255)


def read_eval_results(folder) -> dict:
    with open(os.path.join(folder, "eval_results.json")) as f:
        return json.load(f)


def test_eval_results_merge_and_refuse_corrupt_files(tmp_path):
    folder = str(tmp_path)
    write_eval_results(folder, {"bits_per_dim": {"value": 1.5, "standard_error": float("nan")}})
    write_eval_results(folder, {"fd_digits": {"value": np.float64(2.5), "num_samples": np.int64(10)}})
    results = read_eval_results(folder)
    assert results == {
        "bits_per_dim": {"value": 1.5, "standard_error": None},
        "fd_digits": {"value": 2.5, "num_samples": 10},
    }
    write_eval_results(folder, {"fd_digits": {"value": 3.0}})
    assert read_eval_results(folder)["fd_digits"] == {"value": 3.0}
    assert read_eval_results(folder)["bits_per_dim"]["value"] == 1.5
    assert sorted(os.listdir(folder)) == ["eval_results.json"]  # no staging file left behind
    (tmp_path / "eval_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        write_eval_results(folder, {"fid": {"value": 1.0}})
    assert (tmp_path / "eval_results.json").read_text() == "{not json"


def test_load_images_of_a_folder_round_trips_pngs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    tmp_path = tmp_path / "images"
    tmp_path.mkdir()
    digits = load_digits("test")[0][:5]
    (tmp_path / "sub").mkdir()
    for i, image in enumerate(digits):
        PIL.Image.fromarray(image[..., 0]).save(tmp_path / ("sub" if i % 2 else ".") / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = load_images(str(tmp_path), channels=1, resolution=8, image_folder=True)
    assert loaded.shape == (5, 8, 8, 1) and loaded.dtype == np.uint8
    assert {row.tobytes() for row in loaded} == {row.tobytes() for row in digits}
    assert load_images(str(tmp_path), channels=3, image_folder=True).shape == (5, 8, 8, 3)
    with pytest.raises(ValueError, match="are 8x8, but the model makes 16x16"):
        load_images(str(tmp_path), channels=1, resolution=16, image_folder=True)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_images(str(tmp_path / "missing"), channels=1, image_folder=True)


def test_evaluation_reads_an_image_as_training_does(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    from hf_ddpm.training.data import decode_image

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red left half, transparent right half: white, as training sees it
    (tmp_path / "images").mkdir()
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "a.png")
    loaded = load_images(str(tmp_path / "images"), channels=3, resolution=8, image_folder=True)
    trained = decode_image({"path": str(tmp_path / "images" / "a.png"), "bytes": None}, 8, 3, center_crop=True)
    assert np.array_equal(loaded[0], trained.permute(1, 2, 0).numpy())
    assert loaded[0, 0, 0].tolist() == [255, 0, 0] and loaded[0, 0, -1].tolist() == [255, 255, 255]


def test_load_images_reads_a_split_of_a_local_parquet_dataset(tmp_path, monkeypatch, no_network):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    digits = load_digits("test")[0][:6]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    dataset = datasets.Dataset.from_dict(
        {"image": [PIL.Image.fromarray(d[..., 0]) for d in digits], "label": list(range(6))}, features=features
    )
    (tmp_path / "digits" / "data").mkdir(parents=True)
    dataset.to_parquet(str(tmp_path / "digits" / "data" / "test-00000-of-00001.parquet"))
    loaded = load_images(str(tmp_path / "digits"), channels=1, split="test", resolution=8)
    assert loaded.shape == (6, 8, 8, 1) and np.array_equal(loaded, digits)
    with pytest.raises(ValueError, match="--split 'validation' is not a split of .*digits; it has: test"):
        load_images(str(tmp_path / "digits"), channels=1, split="validation")
    assert no_network == []


# ----------------------------------------------------------------------------------------------------------------
# `hf-ddpm eval`
# ----------------------------------------------------------------------------------------------------------------


def hf_ddpm_command() -> list[str]:
    """The installed `hf-ddpm` entry point; while a teammate's subcommand module is not there yet, the same `main`
    with only the eval subcommand registered."""
    import hf_ddpm.cli

    def importable(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            return False

    if all(importable(name) for name in hf_ddpm.cli.COMMAND_MODULES):
        return [os.path.join(os.path.dirname(sys.executable), "hf-ddpm")]
    code = (
        "import sys, hf_ddpm.cli as c; c.COMMAND_MODULES = ['hf_ddpm.evaluation.cli']; sys.exit(c.main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code]


def test_cli_writes_eval_results_next_to_the_model(saved_pipeline, tiny_dinov2, tmp_path):
    model = str(tmp_path / "model")
    shutil.copytree(saved_pipeline, model)
    write_eval_results(model, {"custom": {"value": 42}})  # an entry from elsewhere must survive
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "5"}
    argv = ["eval", model, "--metric", "bpd", "fd-digits", "fd-dinov2", "--dinov2_model", tiny_dinov2]
    argv += ["--max_images", "24", "--num_timesteps", "6", "--num_samples", "24", "--num_inference_steps", "4"]
    argv += ["--batch_size", "48", "--seed", "7", "--device", "cpu", "--variance_type", "fixed_large"]
    completed = subprocess.run(hf_ddpm_command() + argv, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "| bits_per_dim |" in completed.stdout and "| fd_digits |" in completed.stdout

    results = read_eval_results(model)
    assert set(results) == {"custom", "bits_per_dim", "fd_digits", "fd_dinov2"}
    bpd, digits = results["bits_per_dim"], results["fd_digits"]
    assert bpd["num_images"] == 24 and bpd["num_timesteps"] == 6 and bpd["seed"] == 7
    assert bpd["dataset"] == "digits" and bpd["split"] == "test" and bpd["variance_type"] == "fixed_large"
    assert digits["num_samples"] == 24 and digits["num_inference_steps"] == 4 and digits["seed"] == 7
    assert digits["variance_type"] == "fixed_large" and digits["reference"] == "digits"
    assert digits["bootstrap"] == 200 and digits["bootstrap_seed"] == 7 and digits["standard_error"] > 0
    fd_row = next(line for line in completed.stdout.splitlines() if line.startswith("| fd_digits |"))
    assert f"| {digits['standard_error']:.4f} |" in fd_row  # the table's standard-error column
    assert results["fd_dinov2"]["value"] > 0 and results["custom"] == {"value": 42}
    with PIL.Image.open(os.path.join(model, "eval_samples.png")) as grid:
        assert grid.size == (4 * (5 * 9 + 1), 4 * (5 * 9 + 1))  # 24 samples: 5 x 5 grid of 8+1 pixels, x4

    # the numbers are those of the Python API for the same seed and batch size
    pipeline = with_variance_type(DDPMPosteriorPipeline.from_pretrained(model), "fixed_large")
    expected = bound(pipeline, load_digits("test")[0][:24], seed=7, batch_size=48, num_timesteps=6)
    assert bpd["value"] == pytest.approx(expected.value, rel=1e-6)
    assert bpd["standard_error"] == pytest.approx(expected.standard_error, rel=1e-5)
    samples = generate_samples(pipeline, 24, num_inference_steps=4, batch_size=48, seed=7, show_progress=False).images
    expected_digits = fd_digits(samples, bootstrap=200, seed=7)
    assert digits["value"] == pytest.approx(expected_digits["value"], rel=1e-6)
    assert digits["standard_error"] == pytest.approx(expected_digits["standard_error"], rel=1e-6)


def test_cli_refuses_bad_requests_before_any_work(saved_pipeline, monkeypatch, capsys):
    cases = [  # (flags, exit code: 2 for usage errors, 1 for other failures, a fragment of the message)
        (["--metric", "fd-digits", "--variance_type", "learned_range"], 2, "needs a UNet with learned variances"),
        (["--metric", "fd-digits", "--bootstrap", "1"], 2, "--bootstrap must be 0 (none) or at least 2"),
        (["--metric", "bpd", "--split", "validation"], 2, "--split for --dataset digits must be one of"),
        (["--metric", "fd-digits", "--num_inference_steps", "50"], 2, "exceeds the 20 steps the model was trained"),
        (["--metric", "fd-dinov2", "--dinov2_model", "/nonexistent/dinov2"], 1, "Could not load DINOv2"),
        (["--metric", "bpd", "--output_dir", ""], 2, "--output_dir '' is"),
        # refused after the whole computation before
        (["--metric", "bpd", "--output_dir", os.path.join(saved_pipeline, "model_index.json")], 2, "is a file, not a"),
    ]
    for extra, expected_code, message in cases:
        code = run_cli_in_process(monkeypatch, ["eval", saved_pipeline, *extra])
        stderr = capsys.readouterr().err
        assert code == expected_code and message in stderr, (extra, code, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
    argparse_cases = [  # argparse's own `type=` and `choices=`: one line naming the flag, exit 2
        (["--metric", "inception"], "argument --metric: invalid choice: 'inception'"),
        (["--num_samples", "1"], "argument --num_samples: must be an integer >= 2, got '1'"),
        (["--batch_size", "0"], "argument --batch_size: must be an integer >= 1, got '0'"),
        (["--num_timesteps", "1"], "argument --num_timesteps: must be an integer >= 2, got '1'"),
        (["--max_images", "1"], "argument --max_images: must be an integer >= 2, got '1'"),
        (["--bootstrap", "-1"], "argument --bootstrap: must be an integer >= 0, got '-1'"),
        (["--seed", "-1"], "argument --seed: must be an integer in [0, 9223372036854775807], got '-1'"),
    ]
    for extra, message in argparse_cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli_in_process(monkeypatch, ["eval", saved_pipeline, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1], extra
    assert not os.path.exists(os.path.join(saved_pipeline, "eval_results.json"))


@pytest.mark.parametrize("output_dir", ["", "."])
def test_cli_refuses_an_output_dir_that_holds_the_current_folder(
    saved_pipeline, tmp_path, monkeypatch, capsys, output_dir
):
    """`--output_dir .` overwrote the eval_samples.png of whatever folder the shell was in (`""` failed only after
    sampling): both are refused before any work, as every command refuses them."""
    (tmp_path / "eval_samples.png").write_bytes(b"a user's picture")
    monkeypatch.chdir(tmp_path)
    argv = ["eval", saved_pipeline, "--metric", "fd-digits", "--num_samples", "2", "--num_inference_steps", "2"]
    assert run_cli_in_process(monkeypatch, [*argv, "--bootstrap", "0", "--output_dir", output_dir]) == 2
    assert f"--output_dir {output_dir!r} is" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["eval_samples.png"]
    assert (tmp_path / "eval_samples.png").read_bytes() == b"a user's picture"


def test_cli_help_has_an_example(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_cli_in_process(monkeypatch, ["eval", "--help"])
    out = capsys.readouterr().out
    assert "Example:\n  hf-ddpm eval" in out and "--num_timesteps" in out and "--variance_type" in out


def test_bpd_of_a_class_conditional_model_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """The bound needs each image's class: without this check diffusers' UNet failed mid-run on the missing labels."""
    from conftest import TINY_UNET

    unet = UNet2DModel(**TINY_UNET, sample_size=8, in_channels=1, out_channels=1, num_class_embeds=10)
    DDPMPosteriorPipeline(unet=unet, scheduler=DDPMPosteriorScheduler(num_train_timesteps=20)).save_pretrained(
        str(tmp_path / "conditional")
    )
    argv = ["eval", str(tmp_path / "conditional"), "--metric", "bpd", "--max_images", "4", "--num_timesteps", "4"]
    assert run_cli_in_process(monkeypatch, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--metric bpd: this model is class-conditional" in err[0], err
    assert "class_labels=" in err[0] and not os.path.exists(tmp_path / "conditional" / "eval_results.json")
