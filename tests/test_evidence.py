"""Tests that would notice (issue 17 section 3): each fails on a small change to the code that the rest of the suite
lets through, and each compares against a computation made here from the papers' formulas, scipy or diffusers, not
through the code's own helpers.

    - the discretized decoder is a distribution over the 256 levels (its edge bins start at the edge levels);
    - the decoder variance of every fixed variance type at t = 0 is beta-tilde_1 (Improved DDPM), in closed form;
    - the stratified timestep draw is uniform inside each stratum, and unbiased to a tight tolerance;
    - respacing picks diffusers' timesteps for every spacing, and no noise is added at the last step of a chain
      whatever its timestep (and only there);
    - the shipped model (spaces/ddpm-digits/model) still scores its recorded held-out bits/dim.
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy import stats
from test_evaluation import DATA_STD, GaussianOptimalDenoiser, bound, gaussian_images
from test_scheduler import reference_alphas_cumprod

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm._digits import load_digits
from hf_ddpm.sampling import with_variance_type
from hf_ddpm.scheduling_ddpm_posterior import discretized_gaussian_log_likelihood

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOG2 = math.log(2.0)
LEVELS = np.arange(256) / 127.5 - 1  # the 256 pixel levels of uint8 images in model space [-1, 1]
SHIPPED_MODEL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spaces", "ddpm-digits", "model"
)


# ----------------------------------------------------------------------------------------------------------------
# The discretized decoder (Ho et al. eq. 13)
# ----------------------------------------------------------------------------------------------------------------


def level_probabilities(mean: float, scale: float) -> np.ndarray:
    """
    The normal mass of each level's bin, in float64 with scipy: the bins are cut halfway between neighbouring levels,
    and the first and last reach to -inf and +inf. Each bin is measured on the side of the mean where it does not
    cancel.
    """
    cuts = np.concatenate([[-np.inf], (LEVELS[:-1] + LEVELS[1:]) / 2, [np.inf]])
    lower, upper = cuts[:-1], cuts[1:]
    left = stats.norm.cdf(upper, mean, scale) - stats.norm.cdf(lower, mean, scale)
    right = stats.norm.sf(lower, mean, scale) - stats.norm.sf(upper, mean, scale)
    return np.where(lower > mean, right, left)


@pytest.mark.parametrize(
    "mean, scale",
    [(0.995, 0.01), (-0.995, 0.01), (0.98, 0.03), (-0.97, 0.05), (0.0, 0.5), (0.9, 0.2), (1.3, 0.1), (-1.0, 0.004)],
)
def test_the_discretized_decoder_is_a_distribution_over_the_256_levels(mean, scale):
    """
    The probabilities of the 256 levels sum to 1, and each is its bin's normal mass. Moving the edge-bin threshold
    off the edge levels (0.999 -> 0.99 puts level 254, 0.992, in the tail bin) makes them sum to more than 1.
    """
    x = torch.from_numpy(LEVELS)
    log_p = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, math.log(scale)))
    probabilities = log_p.exp().numpy()
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-9)
    # the code floors a bin's probability at 1e-12 (log 0 would be -inf): absolute tolerance just above that
    np.testing.assert_allclose(probabilities, level_probabilities(mean, scale), rtol=1e-9, atol=2e-12)


# ----------------------------------------------------------------------------------------------------------------
# The bound's terms of the fixed variance types, in closed form (Ho et al. eq. 5-7, 13; Improved DDPM's clipping)
# ----------------------------------------------------------------------------------------------------------------


def closed_form_term_bpd(x0, x_t, eps, t, alphas_cumprod, variance_type) -> float:
    """
    L_{t-1} in bits/dim for one image (float64 numpy [D]) under a fixed-variance model predicting `eps`, without
    clipping: the decoder NLL at t = 0, the Gaussian KL at t > 0. The model's variance is beta_t (large) or
    beta-tilde_t (small), and at t = 0, where beta-tilde is 0, beta-tilde_1 for both, as in the Improved DDPM code
    (`np.append(posterior_variance[1], betas[1:])` and the clipped log of the posterior variance).
    """

    def beta(i):
        return 1 - alphas_cumprod[i] / (alphas_cumprod[i - 1] if i > 0 else 1.0)

    def beta_tilde(i):
        abar_prev = alphas_cumprod[i - 1] if i > 0 else 1.0
        return (1 - abar_prev) / (1 - alphas_cumprod[i]) * beta(i)

    abar, abar_prev = alphas_cumprod[t], (alphas_cumprod[t - 1] if t > 0 else 1.0)
    coef_x0 = math.sqrt(abar_prev) * beta(t) / (1 - abar)  # eq. 7
    coef_xt = math.sqrt(1 - beta(t)) * (1 - abar_prev) / (1 - abar)
    x0_hat = (x_t - math.sqrt(1 - abar) * eps) / math.sqrt(abar)  # eq. 15
    model_mean = coef_x0 * x0_hat + coef_xt * x_t
    if t == 0:
        sigma = math.sqrt(beta_tilde(1))
        levels = np.rint((x0 + 1) * 127.5).astype(int)
        log_p = [math.log(level_probabilities(m, sigma)[k]) for m, k in zip(model_mean, levels, strict=True)]
        return -float(np.mean(log_p)) / LOG2
    variance = beta(t) if variance_type.startswith("fixed_large") else beta_tilde(t)
    true_mean, true_variance = coef_x0 * x0 + coef_xt * x_t, beta_tilde(t)
    kl = 0.5 * (
        np.log(variance / true_variance) + true_variance / variance - 1 + (true_mean - model_mean) ** 2 / variance
    )
    return float(kl.mean()) / LOG2


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"])
def test_fixed_variance_terms_of_the_bound_match_the_closed_form(variance_type, beta_schedule):
    """
    The decoder at t = 0 and KL terms at t > 0 on a known input. At t = 0 fixed_large's variance must be
    beta-tilde_1, not beta_1: on the shipped model that choice alone moves fixed_large's bits/dim 4.360 -> 4.333,
    inside the bound's standard error, so only a closed form notices it.
    """
    scheduler = DDPMPosteriorScheduler(beta_schedule=beta_schedule, variance_type=variance_type, clip_sample=False)
    alphas_cumprod = reference_alphas_cumprod(beta_schedule)
    rng = np.random.default_rng(0)
    x0 = LEVELS[rng.choice(256, size=16)]
    x0[:4] = [-1.0, 1.0, LEVELS[1], LEVELS[254]]  # the edge levels and their neighbours
    for t in [0, 1, 2, 10, 500, 999]:
        noise = rng.standard_normal(16)
        x_t = math.sqrt(alphas_cumprod[t]) * x0 + math.sqrt(1 - alphas_cumprod[t]) * noise
        # a model a little off the true noise, so that its mean is not the posterior's
        eps = noise + 0.3 * rng.standard_normal(16) * (1 if t > 0 else 0.02)
        as_image = lambda a: torch.from_numpy(a).reshape(1, 1, 4, 4)  # noqa: E731
        term = scheduler.vb_terms_bpd(as_image(eps), as_image(x0), as_image(x_t), torch.tensor([t]))
        expected = closed_form_term_bpd(x0, x_t, eps, t, alphas_cumprod, variance_type)
        assert term.item() == pytest.approx(expected, rel=1e-7), t


# ----------------------------------------------------------------------------------------------------------------
# The stratified estimate of the bound: the draw of the timesteps
# ----------------------------------------------------------------------------------------------------------------


def expected_gaussian_kl_terms(alphas_cumprod: np.ndarray) -> np.ndarray:
    """
    E[L_{t-1}] in bits/dim for x_0 ~ N(0, s^2 I) under its Bayes-optimal model with sigma_t^2 = beta-tilde_t, for
    t = 1 .. T-1: c_t^2 Var(x_0 | x_t) / (2 beta-tilde_t), c_t the x_0 coefficient of the posterior mean (eq. 7) and
    Var(x_0 | x_t) = s^2 (1 - abar_t) / (abar_t s^2 + 1 - abar_t). Returns [T] with entry 0 (the decoder) NaN.
    """
    abar, abar_prev = alphas_cumprod[1:], alphas_cumprod[:-1]
    beta = 1 - abar / abar_prev
    beta_tilde = beta * (1 - abar_prev) / (1 - abar)
    coef_x0 = beta * np.sqrt(abar_prev) / (1 - abar)
    s2 = DATA_STD**2
    posterior_variance = s2 * (1 - abar) / (abar * s2 + 1 - abar)
    return np.concatenate([[np.nan], coef_x0**2 * posterior_variance / (2 * beta_tilde) / LOG2])


@pytest.fixture(scope="module")
def stratified_gaussian_bound():
    """The K = 50 estimate of the bound of 400 Gaussian images under their Bayes-optimal model, T = 1000 (linear)."""
    alphas_cumprod = reference_alphas_cumprod("linear")
    scheduler = DDPMPosteriorScheduler(variance_type="fixed_small", clip_sample=False)
    pipeline = DDPMPosteriorPipeline(
        unet=GaussianOptimalDenoiser(alphas_cumprod.tolist(), DATA_STD**2), scheduler=scheduler
    )
    images = torch.from_numpy(gaussian_images(400, seed=5)).reshape(-1, 1, 8, 8)
    result = bound(pipeline, images, seed=0, num_timesteps=50, batch_size=4000, clip_denoised=False)
    return result, alphas_cumprod


def test_stratified_timesteps_are_uniform_inside_their_strata(stratified_gaussian_bound):
    """
    Each image's timestep in a stratum [a, a + s) is uniform on its s timesteps: the positions (j + U) / s, j = t - a
    and U ~ U(0, 1) a jitter drawn here, are U(0, 1) under that hypothesis (Kolmogorov-Smirnov). A draw skewed inside
    its strata (u -> u^3 moves the shipped model's K = 50 estimate by +0.07, two standard errors) fails by far.
    """
    result, _ = stratified_gaussian_bound
    sizes = result.weights[1:].astype(np.int64)
    assert sizes.sum() == 999 and result.weights[0] == 1  # the strata tile [1, 1000); the decoder once
    starts = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    positions = result.timesteps[:, 1:] - starts  # [N x 49] j, each in [0, s)
    assert ((positions >= 0) & (positions < sizes)).all()
    wide = sizes > 1
    jitter = np.random.default_rng(0).uniform(size=positions.shape)
    relative = ((positions + jitter) / sizes)[:, wide].ravel()
    assert relative.size > 10_000
    assert stats.kstest(relative, "uniform").pvalue > 1e-3
    # the mean relative position, (j + 1/2) / s, is 1/2 with variance (1 - 1/s^2) / 12 for a uniform j
    centred = ((positions + 0.5) / sizes - 0.5)[:, wide]
    z = centred.sum() / math.sqrt(len(centred) * ((1 - 1 / sizes[wide] ** 2) / 12).sum())
    assert abs(z) < 4


def test_stratified_draw_is_unbiased_to_a_tight_tolerance(stratified_gaussian_bound):
    """
    Unbiasedness of the draw alone, tighter than the Monte-Carlo check: with f(t) the closed-form expected KL term,
    sum_strata s * f(t_drawn) averages to sum_t f(t) exactly for a uniform draw. 400 images pin it to a fraction of a
    percent; a skew of the draw inside the strata (u -> u^3) moves it by many standard errors (computed here too, so
    the test is known to have the power). The estimate itself, x_t noise included, matches too.
    """
    result, alphas_cumprod = stratified_gaussian_bound
    expected_kl = expected_gaussian_kl_terms(alphas_cumprod)
    full_sum = expected_kl[1:].sum()
    sizes = result.weights[1:].astype(np.int64)
    given_draws = (sizes * expected_kl[result.timesteps[:, 1:]]).sum(axis=1)  # [N]
    standard_error = given_draws.std(ddof=1) / math.sqrt(len(given_draws))
    assert abs(given_draws.mean() - full_sum) < 4 * standard_error

    starts = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    skewed = 0.0  # the expectation under t = a + floor(u^3 s)
    for start, size in zip(starts, sizes, strict=True):
        cdf = (np.arange(size + 1) / size) ** (1 / 3)
        skewed += size * (np.diff(cdf) * expected_kl[start : start + size]).sum()
    assert abs(skewed - full_sum) > 10 * standard_error

    # the estimate itself, x_t noise included: the pipeline's weighted bound and the reported KL part
    kl_per_image = result.per_image - result.prior - result.decoder
    kl_error = kl_per_image.std(ddof=1) / math.sqrt(result.num_images)
    assert kl_per_image.mean() == pytest.approx(full_sum, abs=4 * kl_error)
    assert result.kl == pytest.approx(full_sum, abs=4 * kl_error)


# ----------------------------------------------------------------------------------------------------------------
# Respacing: diffusers' timesteps, and no noise at the last step of a chain
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timestep_spacing", ["trailing", "linspace", "leading"])
def test_spaced_timesteps_are_diffusers_own_for_many_step_counts(timestep_spacing):
    for num_train_timesteps in (1000, 50, 7):
        for steps in sorted({1, 2, 3, 6, 7, 10, 49, 50, 333, 999, 1000} & set(range(1, num_train_timesteps + 1))):
            config = dict(num_train_timesteps=num_train_timesteps, timestep_spacing=timestep_spacing)
            ours = DDPMPosteriorScheduler(**config)
            ours.set_timesteps(steps)
            for theirs in (DDPMScheduler(**config), DDIMScheduler(**config)):
                theirs.set_timesteps(steps)
                assert ours.timesteps.tolist() == theirs.timesteps.tolist(), (type(theirs).__name__, steps)
    # trailing ends the chain above 0 whenever T / N > 1: the case the next test needs
    trailing = DDPMPosteriorScheduler(timestep_spacing="trailing")
    trailing.set_timesteps(3)
    assert trailing.timesteps.tolist() == [999, 666, 332]


def respaced_sigma(alphas_cumprod, t: int, t_next: int, variance_type: str) -> float:
    """sigma of the step t -> t_next of a respaced chain: beta = 1 - abar_t / abar_next, and beta or beta-tilde."""
    beta = 1 - alphas_cumprod[t] / alphas_cumprod[t_next]
    if variance_type == "fixed_large":
        return math.sqrt(beta)
    return math.sqrt(beta * (1 - alphas_cumprod[t_next]) / (1 - alphas_cumprod[t]))


CHAINS = {  # how the chain is set, and its timesteps
    "trailing 3 steps (ends at 332)": ({"num_inference_steps": 3}, [999, 666, 332]),
    "trailing 1 step (only 999)": ({"num_inference_steps": 1}, [999]),
    "custom ending at 20": ({"timesteps": [900, 500, 20]}, [900, 500, 20]),
    "custom ending at 500": ({"timesteps": [900, 500]}, [900, 500]),
    "custom ending at 0": ({"timesteps": [900, 500, 0]}, [900, 500, 0]),
    "only t = 0": ({"timesteps": [0]}, [0]),
}


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("chain", list(CHAINS), ids=list(CHAINS))
def test_noise_is_added_at_every_step_but_the_last_whatever_its_timestep(chain, variance_type):
    """
    The rule is positional: the last step of a chain is the decoder's mean (with alpha_bar_prev = 1 it is the x_0
    prediction itself) and draws no noise, whether its timestep is 0 or not; every earlier step adds sigma z, with the
    sigma of the respaced step. The same timestep 500 is a noisy step in one chain and the noise-free last one in
    another. (t = 0 can only be last: custom timesteps are strictly descending and >= 0.)
    """
    kwargs, expected_chain = CHAINS[chain]
    scheduler = DDPMPosteriorScheduler(
        beta_schedule="squaredcos_cap_v2", variance_type=variance_type, timestep_spacing="trailing"
    )
    scheduler.set_timesteps(**kwargs)
    assert scheduler.timesteps.tolist() == expected_chain
    alphas_cumprod = reference_alphas_cumprod("squaredcos_cap_v2")
    learned = variance_type == "learned_range"
    torch.manual_seed(0)
    for i, t in enumerate(expected_chain):
        sample = torch.randn(2, 1, 8, 8)
        model_output = torch.randn(2, 2 if learned else 1, 8, 8)
        if learned:
            model_output[:, 1:] = 0.0  # v = 0: log sigma^2 halfway between log beta and log beta-tilde
        steps = [
            scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)
        ]
        difference = steps[0].prev_sample - steps[1].prev_sample
        if i == len(expected_chain) - 1:
            assert torch.equal(difference, torch.zeros_like(difference)), (chain, t)
            torch.testing.assert_close(steps[0].prev_sample, steps[0].pred_original_sample, rtol=0, atol=1e-6)
            continue
        t_next = expected_chain[i + 1]
        if learned:
            small = respaced_sigma(alphas_cumprod, t, t_next, "fixed_small")
            sigma = math.sqrt(small * respaced_sigma(alphas_cumprod, t, t_next, "fixed_large"))
        else:
            sigma = respaced_sigma(alphas_cumprod, t, t_next, variance_type)
        noise = [torch.randn(sample.shape, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
        torch.testing.assert_close(difference, sigma * (noise[0] - noise[1]), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="descending"):
        scheduler.set_timesteps(timesteps=[500, 0, 20])


# ----------------------------------------------------------------------------------------------------------------
# The shipped model: its recorded figures still hold
# ----------------------------------------------------------------------------------------------------------------


def test_the_shipped_model_still_scores_its_recorded_held_out_bits_per_dim():
    """
    spaces/ddpm-digits/model records the full bound on the 180 held-out digits (4.14 +- 0.03 bits/dim, in the README
    too). A stratified estimate (K = 10, a second) must land within 3 of its own standard errors of it, its prior term
    (exact) on the recorded one, and its decoder term (exact at t = 0, up to the x_1 draw) within 4 standard errors.
    fixed_large and fixed_small share the decoder variance beta-tilde_1 (Improved DDPM), so on the same draws their
    decoder terms are equal.
    """
    with open(os.path.join(SHIPPED_MODEL, "eval_results.json")) as f:
        recorded = json.load(f)["bits_per_dim"]
    with open(os.path.join(SHIPPED_MODEL, "metrics.json")) as f:
        assert json.load(f)["bits_per_dim"]["value"] == recorded["value"]  # the card and the training agree
    assert recorded["num_timesteps"] == 1000 and recorded["num_images"] == 180 and recorded["split"] == "test"
    assert round(recorded["value"], 2) == 4.14 and round(recorded["standard_error"], 2) == 0.03

    pipeline = DDPMPosteriorPipeline.from_pretrained(SHIPPED_MODEL)
    assert pipeline.scheduler.config.variance_type == recorded["variance_type"] == "learned_range"
    images = load_digits("test")[0]
    output = pipeline.bits_per_dim(
        images, generator=torch.Generator().manual_seed(0), num_timesteps=10, batch_size=900, show_progress=False
    )
    estimate = output.bpd.mean().item()
    assert abs(estimate - recorded["value"]) < 3 * output.standard_error
    assert output.prior_bpd.mean().item() == pytest.approx(recorded["prior"], rel=1e-6)
    decoder = output.vb_bpd[:, 0]
    decoder_error = decoder.std().item() / math.sqrt(len(decoder))
    assert abs(decoder.mean().item() - recorded["decoder"]) < 4 * decoder_error

    decoders = {}
    for variance_type in ("fixed_small", "fixed_large"):
        fixed = with_variance_type(pipeline, variance_type)
        decoders[variance_type] = fixed.bits_per_dim(
            images[:32], generator=torch.Generator().manual_seed(0), num_timesteps=2, show_progress=False
        ).vb_bpd[:, 0]
    torch.testing.assert_close(decoders["fixed_large"], decoders["fixed_small"], rtol=0, atol=0)
