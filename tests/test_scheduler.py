"""DDPMPosteriorScheduler: closed forms, equivalence with diffusers.DDPMScheduler, respacing, the bound, bad input.

The reference values here are computed independently in float64 from the papers' formulas (Ho et al. eq. 4-7 and 15;
Nichol & Dhariwal eq. 15 and section 4), not through the scheduler's own helpers.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy import integrate, stats

from hf_ddpm import DDPMPosteriorScheduler
from hf_ddpm.scheduling_ddpm_posterior import discretized_gaussian_log_likelihood, normal_kl


def reference_alphas_cumprod(beta_schedule: str, num_train_timesteps: int = 1000) -> np.ndarray:
    """alpha-bar in float64, from the schedules' definitions."""
    if beta_schedule == "linear":
        betas = np.linspace(1e-4, 0.02, num_train_timesteps)
    elif beta_schedule == "squaredcos_cap_v2":
        f = [
            math.cos((i / num_train_timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
            for i in range(num_train_timesteps + 1)
        ]
        betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(num_train_timesteps)])
    elif beta_schedule == "scaled_linear":
        betas = np.linspace(1e-4**0.5, 0.02**0.5, num_train_timesteps) ** 2
    else:  # sigmoid
        betas = 1 / (1 + np.exp(-np.linspace(-6, 6, num_train_timesteps))) * (0.02 - 1e-4) + 1e-4
    alphas_cumprod = np.ones(num_train_timesteps)
    running = 1.0
    for i, beta in enumerate(betas):
        running *= 1 - beta
        alphas_cumprod[i] = running
    return alphas_cumprod


def reference_step(model_output, sample, noise, abar_t, abar_prev, config, is_last_step):
    """One DDPM step in float64 from the formulas, for the chain step abar_prev -> abar_t."""
    x_t = sample.double()
    channels = x_t.shape[1]
    mean_output, v = model_output[:, :channels].double(), model_output[:, channels:].double()
    beta = 1 - abar_t / abar_prev
    if config["prediction_type"] == "epsilon":
        x0 = (x_t - math.sqrt(1 - abar_t) * mean_output) / math.sqrt(abar_t)  # Ho et al. eq. 15
    elif config["prediction_type"] == "sample":
        x0 = mean_output
    else:
        x0 = math.sqrt(abar_t) * x_t - math.sqrt(1 - abar_t) * mean_output
    if config.get("clip_sample", True):
        x0 = x0.clamp(-1, 1)
    # Ho et al. eq. 7
    mean = math.sqrt(abar_prev) * beta / (1 - abar_t) * x0 + math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t) * x_t
    if is_last_step:
        return mean, x0
    beta_tilde = (1 - abar_prev) / (1 - abar_t) * beta
    variance_type = config["variance_type"]
    if variance_type.startswith("fixed_small"):
        sigma = torch.tensor(math.sqrt(beta_tilde), dtype=torch.float64)
    elif variance_type.startswith("fixed_large"):
        sigma = torch.tensor(math.sqrt(beta), dtype=torch.float64)
    else:  # learned_range, Nichol & Dhariwal eq. 15
        frac = (v + 1) / 2
        sigma = torch.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)))
    return mean + sigma * noise.double(), x0


CONFIGS = [
    dict(beta_schedule=schedule, variance_type=variance, prediction_type=prediction, clip_sample=clip)
    for schedule, variance, prediction, clip in itertools.product(
        ["linear", "squaredcos_cap_v2", "scaled_linear", "sigmoid"],
        ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"],
        ["epsilon", "sample", "v_prediction"],
        [True, False],
    )
]


def _ids(config):
    return "-".join(str(v) for v in config.values())


@pytest.mark.parametrize("num_inference_steps", [None, 50])
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_step_matches_diffusers_and_float64_reference(config, num_inference_steps):
    """Same inputs and generator: same outputs as diffusers (within float32 rounding), and always exact."""
    ours, theirs = DDPMPosteriorScheduler(**config), DDPMScheduler(**config)
    if num_inference_steps:
        ours.set_timesteps(num_inference_steps)
        theirs.set_timesteps(num_inference_steps)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    alphas_cumprod = reference_alphas_cumprod(config["beta_schedule"])
    learned = config["variance_type"] == "learned_range"
    torch.manual_seed(0)
    chain = ours.timesteps.tolist()
    # every step of a short chain; a sample of 40 steps of the full one, the last ones included
    steps = range(len(chain)) if num_inference_steps else [*range(0, 1000, 37), *range(990, 1000)]
    for i in steps:
        t = chain[i]
        sample = torch.randn(2, 3, 8, 8)
        model_output = torch.randn(2, 6 if learned else 3, 8, 8)
        if learned:
            model_output[:, 3:] = model_output[:, 3:].clamp(-1, 1)
        generator_seed = 1000 + t
        a = ours.step(model_output, t, sample, generator=torch.Generator().manual_seed(generator_seed))
        b = theirs.step(model_output, t, sample, generator=torch.Generator().manual_seed(generator_seed))
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(generator_seed))
        abar_prev = alphas_cumprod[chain[i + 1]] if i + 1 < len(chain) else 1.0
        ref_prev, ref_x0 = reference_step(
            model_output, sample, noise, alphas_cumprod[t], abar_prev, config, i + 1 == len(chain)
        )
        # float32 rounding is amplified by 1/sqrt(alpha_bar_t) when x_0 is recovered from an epsilon prediction
        amplification = 1 / math.sqrt(alphas_cumprod[t])
        for name, mine, diffusers_value, reference in [
            ("prev_sample", a.prev_sample, b.prev_sample, ref_prev),
            ("pred_original_sample", a.pred_original_sample, b.pred_original_sample, ref_x0),
        ]:
            tolerance = 1e-5 + 3e-7 * amplification * (1 + reference.abs())
            our_error = (mine.double() - reference).abs()
            assert (our_error <= tolerance).all(), f"{name} at t={t}: off the float64 reference by {our_error.max()}"
            matches_diffusers = ((mine - diffusers_value).abs().double() <= tolerance).all()
            closer_than_diffusers = our_error.max() <= (diffusers_value.double() - reference).abs().max()
            assert matches_diffusers or closer_than_diffusers, f"{name} at t={t} differs from diffusers"


def test_default_config_matches_diffusers_to_1e5_on_a_real_chain():
    """The out-of-the-box DDPM chain: a user who swaps schedulers keeps their images.

    For t <= 10 diffusers' float32 `1 - alpha_bar_t / alpha_bar_{t-1}` (beta ~ 1e-4) loses digits and the two differ
    by up to ~1e-4; test_step_matches_diffusers_and_float64_reference shows ours is the exact one there.
    """
    ours, theirs = DDPMPosteriorScheduler(), DDPMScheduler()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    g_ours, g_theirs = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for t in range(999, -1, -1):
        model_output = 0.3 * x + 0.5 * torch.randn_like(x)
        x_ours = ours.step(model_output, t, x, generator=g_ours).prev_sample
        x = theirs.step(model_output, t, x, generator=g_theirs).prev_sample
        assert (x_ours - x).abs().max() <= (1e-5 if t > 10 else 1e-4), t


def test_cosine_last_steps_closer_to_float64_than_diffusers():
    """Where diffusers' float32 schedule loses digits (cosine, t <= 2), ours keeps them."""
    ours, theirs = (
        DDPMPosteriorScheduler(beta_schedule="squaredcos_cap_v2"),
        DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
    )
    alphas_cumprod = reference_alphas_cumprod("squaredcos_cap_v2")
    beta_ref = 1 - alphas_cumprod[1] / alphas_cumprod[0]
    beta_diffusers = float(1 - theirs.alphas_cumprod[1] / theirs.alphas_cumprod[0])
    beta_ours = float(1 - ours.alphas_cumprod.double()[1] / ours.alphas_cumprod.double()[0])
    ours_error = abs(ours._chain["betas"][1] - beta_ref)
    assert ours_error < 1e-12
    assert abs(beta_diffusers - beta_ref) > 1000 * ours_error
    assert abs(beta_ours - beta_ref) / beta_ref < 1e-3  # the public float32 mirror is only a mirror


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2", "scaled_linear", "sigmoid"])
def test_alphas_cumprod_and_posterior_closed_form(beta_schedule):
    scheduler = DDPMPosteriorScheduler(beta_schedule=beta_schedule)
    alphas_cumprod = reference_alphas_cumprod(beta_schedule)
    np.testing.assert_allclose(scheduler._alphas_cumprod64, alphas_cumprod, rtol=1e-12)
    torch.testing.assert_close(scheduler.alphas_cumprod, torch.from_numpy(alphas_cumprod).float())
    timesteps = torch.tensor([0, 1, 10, 500, 999])
    x0 = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    xt = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    mean, variance, log_variance = scheduler.q_posterior_mean_variance(x0, xt, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        abar, abar_prev = alphas_cumprod[t], (alphas_cumprod[t - 1] if t > 0 else 1.0)
        beta = 1 - abar / abar_prev
        # Ho et al. eq. 7
        expected_mean = (
            math.sqrt(abar_prev) * beta / (1 - abar) * x0[i]
            + math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * xt[i]
        )
        expected_variance = (1 - abar_prev) / (1 - abar) * beta
        torch.testing.assert_close(mean[i], expected_mean, rtol=1e-12, atol=1e-12)
        assert variance[i].item() == pytest.approx(expected_variance, rel=1e-12, abs=1e-300)
        # the log-variance is clipped at t = 0 to beta-tilde_1 (Improved DDPM code)
        clipped = (
            expected_variance
            if t > 0
            else (1 - alphas_cumprod[0]) / (1 - alphas_cumprod[1]) * (1 - alphas_cumprod[1] / alphas_cumprod[0])
        )
        assert log_variance[i].item() == pytest.approx(math.log(clipped), rel=1e-12)


def test_add_noise_and_velocity_closed_form():
    scheduler = DDPMPosteriorScheduler(beta_schedule="squaredcos_cap_v2")
    alphas_cumprod = reference_alphas_cumprod("squaredcos_cap_v2")
    x0, noise = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 400, 999])
    a = torch.from_numpy(alphas_cumprod[t.numpy()]).reshape(3, 1, 1, 1)
    torch.testing.assert_close(scheduler.add_noise(x0, noise, t), a.sqrt() * x0 + (1 - a).sqrt() * noise)
    torch.testing.assert_close(scheduler.get_velocity(x0, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x0)
    # and the same as diffusers in float32
    diffusers_scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(
        scheduler.add_noise(x0.float(), noise.float(), t), diffusers_scheduler.add_noise(x0.float(), noise.float(), t)
    )


def test_normal_kl_against_numerical_integration():
    for mean1, var1, mean2, var2 in [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.5, 0.01, 1.0, 0.04)]:
        p, q = stats.norm(mean1, math.sqrt(var1)), stats.norm(mean2, math.sqrt(var2))
        integrand = lambda x, p=p, q=q: p.pdf(x) * (p.logpdf(x) - q.logpdf(x))  # noqa: E731
        expected, _ = integrate.quad(integrand, -30, 30, points=[mean1])
        value = normal_kl(
            torch.tensor(mean1, dtype=torch.float64),
            torch.tensor(math.log(var1), dtype=torch.float64),
            torch.tensor(mean2, dtype=torch.float64),
            torch.tensor(math.log(var2), dtype=torch.float64),
        )
        assert value.item() == pytest.approx(expected, abs=1e-7)


def test_discretized_gaussian_log_likelihood_against_scipy():
    x = torch.tensor([-1.0, -1.0, 0.0, 4 / 255.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    means = torch.tensor([-0.9, 0.5, 0.01, 0.0, 0.95, -0.5, 0.9], dtype=torch.float64)
    scales = torch.tensor([0.1, 0.05, 0.02, 0.5, 0.1, 0.05, 0.003], dtype=torch.float64)
    value = discretized_gaussian_log_likelihood(x, means, scales.log())
    for i in range(len(x)):
        dist = stats.norm(means[i].item(), scales[i].item())
        lo, hi = x[i].item() - 1 / 255, x[i].item() + 1 / 255
        if x[i] <= -1:
            expected = dist.logcdf(hi)
        elif x[i] >= 1:
            expected = dist.logsf(lo)
        else:
            expected = (
                math.log(max(dist.cdf(hi) - dist.cdf(lo), 1e-12))
                if hi < means[i]
                else math.log(max(dist.sf(lo) - dist.sf(hi), 1e-12))
            )
        assert value[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-9), i


def test_vb_terms_are_the_kl_and_decoder_terms():
    """vb_terms_bpd against the Gaussian KL and the decoder NLL written out here, for learned_range."""
    scheduler = DDPMPosteriorScheduler(
        num_train_timesteps=100, variance_type="learned_range", beta_schedule="squaredcos_cap_v2"
    )
    alphas_cumprod = reference_alphas_cumprod("squaredcos_cap_v2", 100)
    torch.manual_seed(0)
    x0 = (torch.randint(0, 256, (4, 1, 4, 4)).double() / 127.5 - 1).double()
    xt = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    out = torch.cat([torch.randn(4, 1, 4, 4), torch.rand(4, 1, 4, 4) * 2 - 1], dim=1).double()
    t = torch.tensor([0, 1, 50, 99])
    bpd = scheduler.vb_terms_bpd(out, x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        abar, abar_prev = alphas_cumprod[ti], (alphas_cumprod[ti - 1] if ti > 0 else 1.0)
        beta = 1 - abar / abar_prev
        beta_tilde = (1 - abar_prev) / (1 - abar) * beta
        beta_tilde_1 = (1 - alphas_cumprod[0]) / (1 - alphas_cumprod[1]) * (1 - alphas_cumprod[1] / alphas_cumprod[0])
        min_log = math.log(beta_tilde if ti > 0 else beta_tilde_1)
        frac = (out[i, 1] + 1) / 2
        model_log_var = frac * math.log(beta) + (1 - frac) * min_log
        pred_x0 = (xt[i] - math.sqrt(1 - abar) * out[i, 0]) / math.sqrt(abar)
        c1, c2 = math.sqrt(abar_prev) * beta / (1 - abar), math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)
        model_mean = c1 * pred_x0 + c2 * xt[i, 0]
        if ti == 0:
            dist_sd = torch.exp(0.5 * model_log_var)
            expected = -np.mean(
                [
                    _discretized_log_prob(
                        x0[i, 0].flatten()[k].item(), model_mean.flatten()[k].item(), dist_sd.flatten()[k].item()
                    )
                    for k in range(16)
                ]
            ) / math.log(2)
        else:
            true_mean = c1 * x0[i, 0] + c2 * xt[i, 0]
            kl = 0.5 * (
                -1
                + model_log_var
                - math.log(beta_tilde)
                + beta_tilde / model_log_var.exp()
                + (true_mean - model_mean) ** 2 / model_log_var.exp()
            )
            expected = kl.mean().item() / math.log(2)
        assert bpd[i].item() == pytest.approx(expected, rel=1e-6), ti


def _discretized_log_prob(x, mean, sd):
    dist = stats.norm(mean, sd)
    if x < -1 + 1 / 255:  # the first level's bin reaches to -inf, the last one's to +inf
        return dist.logcdf(x + 1 / 255)
    if x > 1 - 1 / 255:
        return dist.logsf(x - 1 / 255)
    return math.log(max(dist.cdf(x + 1 / 255) - dist.cdf(x - 1 / 255), 1e-12))


def test_prior_bpd_closed_form():
    scheduler = DDPMPosteriorScheduler()
    alphas_cumprod = reference_alphas_cumprod("linear")
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    abar = alphas_cumprod[-1]
    kl = 0.5 * (-1 - math.log(1 - abar) + (1 - abar) + abar * x0**2)
    torch.testing.assert_close(scheduler.prior_bpd(x0), kl.mean(dim=(1, 2, 3)) / math.log(2))


# --------------------------------------------------------------------------------------------------------------
# Respacing
# --------------------------------------------------------------------------------------------------------------


def improved_ddpm_respaced_betas(alphas_cumprod: np.ndarray, use_timesteps) -> np.ndarray:
    """respace.py of openai/improved-diffusion: keep alpha-bar at use_timesteps, betas from consecutive ratios."""
    last_alpha_cumprod, new_betas = 1.0, []
    for i, alpha_cumprod in enumerate(alphas_cumprod):
        if i in use_timesteps:
            new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
            last_alpha_cumprod = alpha_cumprod
    return np.array(new_betas)


@pytest.mark.parametrize("timestep_spacing", ["linspace", "leading"])
def test_respaced_learned_range_matches_improved_ddpm(timestep_spacing):
    """At 50 steps, learned_range uses the variances of the respaced chain, as improved-diffusion's respace.py."""
    scheduler = DDPMPosteriorScheduler(
        variance_type="learned_range", beta_schedule="squaredcos_cap_v2", timestep_spacing=timestep_spacing
    )
    scheduler.set_timesteps(50)
    chain = sorted(scheduler.timesteps.tolist())
    alphas_cumprod = reference_alphas_cumprod("squaredcos_cap_v2")
    betas = improved_ddpm_respaced_betas(alphas_cumprod, set(chain))
    new_alphas_cumprod = np.cumprod(1 - betas)
    new_prev = np.append(1.0, new_alphas_cumprod[:-1])
    posterior_variance = betas * (1 - new_prev) / (1 - new_alphas_cumprod)
    log_variance_clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    torch.manual_seed(0)
    for index in [49, 30, 1]:
        t = chain[index]
        x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
        eps, v = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
        out = scheduler.step(torch.cat([eps, v], 1), t, x, generator=torch.Generator().manual_seed(t))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        abar, abar_prev, beta = new_alphas_cumprod[index], new_prev[index], betas[index]
        x0 = ((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1)
        mean = beta * math.sqrt(abar_prev) / (1 - abar) * x0 + (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar) * x
        frac = (v + 1) / 2
        log_var = frac * math.log(beta) + (1 - frac) * log_variance_clipped[index]
        torch.testing.assert_close(out.prev_sample, mean + torch.exp(0.5 * log_var) * noise, rtol=1e-10, atol=1e-10)


def test_respacing_keeps_every_variance_type_finite_and_decoder_noise_free():
    for variance_type in ["fixed_small", "fixed_large", "fixed_large_log", "learned", "learned_range"]:
        scheduler = DDPMPosteriorScheduler(variance_type=variance_type, beta_schedule="squaredcos_cap_v2")
        for spacing_steps in [10, 50, 100, 1000]:
            scheduler.set_timesteps(spacing_steps)
            x = torch.randn(1, 1, 4, 4)
            channels = 2 if variance_type.startswith("learned") else 1
            for t in scheduler.timesteps:
                out = torch.randn(1, channels, 4, 4).clamp(-1, 1)
                step = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(int(t)))
                assert torch.isfinite(step.prev_sample).all(), (variance_type, spacing_steps, int(t))
                if t == scheduler.timesteps[-1]:
                    # the decoder step draws no noise: another generator gives the same image, the x_0 prediction
                    other = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(int(t) + 1))
                    assert torch.equal(other.prev_sample, step.prev_sample), (variance_type, spacing_steps)
                    torch.testing.assert_close(step.prev_sample, step.pred_original_sample, rtol=0, atol=1e-6)
                x = step.prev_sample


def test_fixed_large_log_is_fixed_large_not_nan():
    """diffusers issue 14569: fixed_large_log returns NaN there; here it is sigma^2 = beta in log space."""
    a, b = DDPMPosteriorScheduler(variance_type="fixed_large"), DDPMPosteriorScheduler(variance_type="fixed_large_log")
    x, out = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ra = a.step(out, 500, x, generator=torch.Generator().manual_seed(0)).prev_sample
    rb = b.step(out, 500, x, generator=torch.Generator().manual_seed(0)).prev_sample
    torch.testing.assert_close(ra, rb)
    assert torch.isfinite(rb).all()


def test_learned_reads_log_variance_as_improved_ddpm():
    scheduler = DDPMPosteriorScheduler(variance_type="learned")
    x, eps = torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.randn(1, 1, 4, 4, dtype=torch.float64)
    log_var = torch.full((1, 1, 4, 4), -3.0, dtype=torch.float64)
    out = scheduler.step(torch.cat([eps, log_var], 1), 500, x, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    abar = scheduler._alphas_cumprod64
    x0 = ((x - math.sqrt(1 - abar[500]) * eps) / math.sqrt(abar[500])).clamp(-1, 1)
    beta = 1 - abar[500] / abar[499]
    mean = (
        beta * math.sqrt(abar[499]) / (1 - abar[500]) * x0
        + (1 - abar[499]) * math.sqrt(1 - beta) / (1 - abar[500]) * x
    )
    torch.testing.assert_close(out.prev_sample, mean + math.exp(-1.5) * noise)


def test_interchangeable_with_diffusers_configs(tmp_path):
    ours = DDPMPosteriorScheduler(
        beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", prediction_type="v_prediction"
    )
    ddim = DDIMScheduler.from_config(ours.config)
    assert ddim.config.beta_schedule == "squaredcos_cap_v2" and ddim.config.prediction_type == "v_prediction"
    assert "DDIMScheduler" in [c.__name__ for c in ours.compatibles]
    DDPMScheduler(beta_schedule="scaled_linear", variance_type="fixed_large", clip_sample=False).save_pretrained(
        str(tmp_path)
    )
    loaded = DDPMPosteriorScheduler.from_pretrained(str(tmp_path))
    assert (loaded.config.beta_schedule, loaded.config.variance_type, loaded.config.clip_sample) == (
        "scaled_linear",
        "fixed_large",
        False,
    )
    ours.save_pretrained(str(tmp_path / "ours"))  # its module travels with a pipeline (DDPMPosteriorPipeline's save)
    reloaded = DDPMPosteriorScheduler.from_pretrained(str(tmp_path / "ours"))
    assert {k: v for k, v in reloaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in ours.config.items() if not k.startswith("_")
    }


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(beta_schedule="cosine"), ValueError, ["beta_schedule", "squaredcos_cap_v2"]),
        (dict(variance_type="small"), ValueError, ["variance_type", "fixed_small", "learned_range"]),
        (dict(prediction_type="x0"), ValueError, ["prediction_type", "epsilon", "v_prediction"]),
        (dict(timestep_spacing="even"), ValueError, ["timestep_spacing", "trailing"]),
        (dict(num_train_timesteps=0), ValueError, ["num_train_timesteps"]),
        (dict(num_train_timesteps=10.5), TypeError, ["num_train_timesteps"]),
        # a config asking for 7.5 GiB of schedules, and a NaN beta (which failed with an IndexError)
        (dict(num_train_timesteps=10**9), ValueError, ["`num_train_timesteps` must be in [1, 100,000]"]),
        (dict(beta_end=float("nan")), ValueError, ["beta_end=nan", "(0, 1]"]),
        (dict(beta_start=0.0, beta_end=0.02), ValueError, ["beta", "(0, 1]"]),
        (dict(beta_end=1.5), ValueError, ["beta", "(0, 1]"]),
        (dict(trained_betas=[0.1, 0.2], num_train_timesteps=3), ValueError, ["trained_betas", "num_train_timesteps"]),
        (dict(trained_betas=[0.1, -0.2]), ValueError, ["beta"]),
        (dict(rescale_betas_zero_snr=True), ValueError, ["rescale_betas_zero_snr", "v_prediction"]),
    ],
)
def test_bad_config_is_refused_with_its_name(kwargs, error, words):
    if "trained_betas" in kwargs and "num_train_timesteps" not in kwargs:
        kwargs["num_train_timesteps"] = len(kwargs["trained_betas"])
    with pytest.raises(error) as info:
        DDPMPosteriorScheduler(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_bad_calls_are_refused_with_their_names():
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=100)
    x = torch.randn(2, 3, 4, 4)
    cases = [
        (lambda: scheduler.set_timesteps(101), ValueError, "num_inference_steps"),
        (lambda: scheduler.set_timesteps(0), ValueError, "num_inference_steps"),
        (lambda: scheduler.set_timesteps(), ValueError, "num_inference_steps"),
        (lambda: scheduler.set_timesteps(10, timesteps=[5, 1]), ValueError, "timesteps"),
        (lambda: scheduler.set_timesteps(timesteps=[5, 5, 1]), ValueError, "descending"),
        (lambda: scheduler.set_timesteps(timesteps=[1, 5]), ValueError, "descending"),
        (lambda: scheduler.set_timesteps(timesteps=[100, 5]), ValueError, "[0, 100)"),
        (lambda: scheduler.set_timesteps(timesteps=[5, -1]), ValueError, "[0, 100)"),
        (lambda: scheduler.step(torch.randn(2, 3, 4, 4), 100, x), ValueError, "timestep"),
        (lambda: scheduler.step(torch.randn(2, 4, 4, 4), 50, x), ValueError, "channels"),
        (lambda: scheduler.step(torch.randn(3, 3, 4, 4), 50, x), ValueError, "shape"),
        (lambda: scheduler.add_noise(x, torch.randn(2, 3, 4, 5), torch.tensor([1, 2])), ValueError, "noise"),
        (lambda: scheduler.add_noise(x, torch.randn_like(x), torch.tensor([1, 200])), ValueError, "timesteps"),
        (lambda: scheduler.add_noise(x, torch.randn_like(x), torch.tensor([1, 2, 3])), ValueError, "timesteps"),
    ]
    for call, error, word in cases:
        with pytest.raises(error, match=None) as info:
            call()
        assert word in str(info.value), str(info.value)
    learned = DDPMPosteriorScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="2 x 3 channels"):
        learned.step(torch.randn(2, 3, 4, 4), 500, x)


def test_respaced_step_rejects_timesteps_outside_the_chain():
    scheduler = DDPMPosteriorScheduler()
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="not in the current chain"):
        scheduler.step(torch.randn(1, 1, 4, 4), 999, torch.randn(1, 1, 4, 4))
    assert scheduler.previous_timestep(900) == 800 and scheduler.previous_timestep(0) == -1


def test_no_nan_for_valid_configs_at_the_ends_of_the_chain():
    for schedule in ["linear", "squaredcos_cap_v2", "scaled_linear", "sigmoid"]:
        for variance_type in ["fixed_small", "fixed_large", "learned_range"]:
            scheduler = DDPMPosteriorScheduler(beta_schedule=schedule, variance_type=variance_type)
            channels = 2 if variance_type == "learned_range" else 1
            for t in [999, 998, 1, 0]:
                out = scheduler.step(torch.randn(1, channels, 4, 4).clamp(-1, 1), t, torch.randn(1, 1, 4, 4))
                assert torch.isfinite(out.prev_sample).all() and torch.isfinite(out.pred_original_sample).all()
            x0 = torch.rand(2, 1, 4, 4) * 2 - 1
            xt = torch.randn(2, 1, 4, 4)
            terms = scheduler.vb_terms_bpd(torch.randn(2, channels, 4, 4).clamp(-1, 1), x0, xt, torch.tensor([0, 999]))
            assert torch.isfinite(terms).all()


def _in_layout(x, layout):
    """The same values in another memory layout: contiguous, permuted (non-contiguous) or channels_last."""
    if layout == "permuted":  # as diffusers' own scheduler tests permute their dummy samples
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def _linear_model(weights, x, variance_type):
    """A deterministic stand-in for a UNet: channel mixing, with the variance channels squashed into [-1, 1]."""
    output = torch.einsum("oc,nchw->nohw", weights, x)
    channels = x.shape[1]
    if variance_type == "learned_range":
        return torch.cat([output[:, :channels], output[:, channels:].tanh()], dim=1)
    return output[:, :channels]


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("layout", ["contiguous", "permuted", "channels_last"])
def test_same_noise_as_diffusers_for_every_memory_layout(variance_type, layout):
    """
    A 1000-step chain on a sample (and model output) in any memory layout stays within float32 rounding of
    diffusers' chain on the contiguous sample: the noise of a generator lands on the same pixels.
    """
    ours, theirs = DDPMPosteriorScheduler(variance_type=variance_type), DDPMScheduler(variance_type=variance_type)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x_ours = _in_layout(x, layout)
    assert x_ours.is_contiguous() == (layout == "contiguous")
    weights = torch.randn(6, 3, generator=torch.Generator().manual_seed(2)) * 0.3
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in range(999, -1, -1):
        output = _in_layout(_linear_model(weights, x_ours, variance_type), layout)  # a UNet keeps the layout
        x_ours = ours.step(output, t, x_ours, generator=g_ours).prev_sample
        x = theirs.step(_linear_model(weights, x, variance_type), t, x, generator=g_theirs).prev_sample
    assert (x_ours - x).abs().max() < 1e-3


def test_previous_timestep_returns_what_diffusers_returns():
    ours, theirs = DDPMPosteriorScheduler(), DDPMScheduler()
    for timestep in (500, torch.tensor(500), 0, torch.tensor(0)):  # the full training chain: timestep - 1
        mine, expected = ours.previous_timestep(timestep), theirs.previous_timestep(timestep)
        assert type(mine) is type(expected) and mine == expected
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    for timestep in (900, torch.tensor(900), 0, torch.tensor(0)):
        mine, expected = ours.previous_timestep(timestep), theirs.previous_timestep(timestep)
        assert isinstance(mine, torch.Tensor) and mine.ndim == 0 and torch.equal(mine, expected)
    ours.set_timesteps(timesteps=[700, 300, 5])
    theirs.set_timesteps(timesteps=[700, 300, 5])
    assert torch.equal(ours.previous_timestep(torch.tensor(300)), theirs.previous_timestep(torch.tensor(300)))


def test_trailing_spacing_has_as_many_timesteps_as_asked_and_diffusers_values_where_diffusers_has_as_many() -> None:
    # diffusers' float arange yields n + 1 timesteps ending at -1 for some n (e.g. 61 and 103 of T = 1000)
    ours = DDPMPosteriorScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    theirs = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    overlong = 0
    for n in range(1, 1001):
        ours.set_timesteps(n)
        timesteps = ours.timesteps.numpy()
        assert len(timesteps) == n and timesteps[0] == 999 and timesteps[-1] >= 0, n
        assert (np.diff(timesteps) < 0).all(), n
        theirs.set_timesteps(n)
        if len(theirs.timesteps) == n:
            np.testing.assert_array_equal(timesteps, theirs.timesteps.numpy())
        else:
            overlong += 1
    assert overlong > 0  # the case the fix is for still exists upstream, so this test exercises it
    ours.set_timesteps(61)  # one of those counts: the whole chain runs and stays finite
    sample = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in ours.timesteps:
        sample = ours.step(torch.zeros_like(sample), t, sample, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.isfinite(sample).all()
