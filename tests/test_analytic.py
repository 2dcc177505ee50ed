"""Analytic-DPM variances: the closed form against Gaussian data where everything is known exactly, the proven bounds
for every chain, the Gamma estimator, sampling and the bound with them, save/load with and without hf_ddpm, bad
statistics refused, and `hf-ddpm analytic` end to end."""

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_tiny_unet
from diffusers import DDPMScheduler
from test_evaluation import BETAS, DATA_STD, GaussianOptimalDenoiser, gaussian_images
from test_loading import REMOTE_CODE_SCRIPT, _sample

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm.analytic import control_variate_mean, estimate_gamma, with_analytic_variances
from hf_ddpm.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOG2 = math.log(2.0)
T = BETAS["num_train_timesteps"]
ALPHA_BAR = np.cumprod(1 - np.linspace(BETAS["beta_start"], BETAS["beta_end"], T))


# ----------------------------------------------------------------------------------------------------------------
# Gaussian data x_0 ~ N(0, s^2 I): the Bayes-optimal predictor, its Gamma and the optimal variances in closed form
# ----------------------------------------------------------------------------------------------------------------


def exact_gamma() -> np.ndarray:
    """E||E[eps | x_t]||^2 / d = (1 - abar_t) / (abar_t s^2 + 1 - abar_t): eps* = sqrt(1 - abar) x_t / Var(x_t)."""
    return (1 - ALPHA_BAR) / (ALPHA_BAR * DATA_STD**2 + 1 - ALPHA_BAR)


def conditional_variance(s: int, t: int) -> float:
    """
    Var(x_s | x_t) per dimension, from the joint Gaussian of (x_s, x_t), s < t: the variance of the true reverse
    marginal step, which is the optimal variance of the reverse step of the Bayes-optimal model on Gaussian data.
    The decoder's x_s is x_0 itself (s = -1).
    """
    a_s, a_t, s2 = (1.0 if s < 0 else ALPHA_BAR[s]), ALPHA_BAR[t], DATA_STD**2
    var_s = a_s * s2 + 1 - a_s
    var_t = a_t * s2 + 1 - a_t
    covariance = math.sqrt(a_s * a_t) * s2 + math.sqrt(a_t / a_s) * (1 - a_s)
    return var_s - covariance**2 / var_t


def gaussian_pipeline(variance_type: str, **scheduler_kwargs) -> DDPMPosteriorPipeline:
    scheduler = DDPMPosteriorScheduler(
        **BETAS,
        variance_type=variance_type,
        analytic_gamma=exact_gamma().tolist(),
        clip_sample=False,
        **scheduler_kwargs,
    )
    return DDPMPosteriorPipeline(unet=GaussianOptimalDenoiser(ALPHA_BAR.tolist(), DATA_STD**2), scheduler=scheduler)


def analytic_variances(scheduler: DDPMPosteriorScheduler) -> np.ndarray:
    """sigma_n^2 of each step of the current chain, in chain order (first step first)."""
    return np.exp(scheduler._chain["log_analytic_variance"])


CHAINS = [
    ("full", dict(num_inference_steps=T)),
    ("linspace 7", dict(num_inference_steps=7)),
    ("leading 5", dict(num_inference_steps=5)),
    ("trailing 4", dict(num_inference_steps=4)),
    ("custom", dict(timesteps=[19, 12, 11, 3, 0])),
]


@pytest.mark.parametrize("name, chain", CHAINS, ids=[name for name, _ in CHAINS])
def test_analytic_variance_is_the_exact_optimal_variance_of_gaussian_data(name, chain):
    spacing = {"linspace 7": "linspace", "trailing 4": "trailing"}.get(name, "leading")
    scheduler = gaussian_pipeline("analytic", timestep_spacing=spacing).scheduler
    scheduler.set_timesteps(**chain)
    kept = scheduler.timesteps.numpy()[::-1]  # ascending
    expected = [conditional_variance(s, t) for s, t in zip(kept[:-1], kept[1:], strict=True)]
    # every step but the decoder: sigma*^2 is exactly Var(x_s | x_t) (Bao et al. Theorem 1, respaced alpha-bars)
    np.testing.assert_allclose(analytic_variances(scheduler)[1:], expected, rtol=1e-9)
    # the decoder: Var(x_0 | x_first), floored at beta-tilde_1 of the training chain
    beta_tilde_1 = (1 - ALPHA_BAR[1] / ALPHA_BAR[0]) * (1 - ALPHA_BAR[0]) / (1 - ALPHA_BAR[1])
    expected_decoder = max(conditional_variance(-1, kept[0]), beta_tilde_1)
    assert analytic_variances(scheduler)[0] == pytest.approx(expected_decoder, rel=1e-9)


def random_chains(num_train_timesteps: int, count: int) -> list[dict]:
    """`count` random descending subsets of the timesteps, of every length: respacings no spacing rule makes."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, num_train_timesteps + 1, count)
    return [
        dict(timesteps=sorted(rng.choice(num_train_timesteps, n, replace=False).tolist(), reverse=True))
        for n in lengths
    ]


@pytest.mark.parametrize("spacing", ["linspace", "leading", "custom"])
def test_analytic_variance_lies_within_the_proven_bounds_for_every_chain(spacing):
    num_train_timesteps = 60
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.2, num_train_timesteps))
    # Gamma anywhere in [0, 2]: a Monte-Carlo estimate or an imperfect model can give Gamma > 1
    gamma = np.random.default_rng(0).uniform(0, 2, num_train_timesteps)
    gamma[::7], gamma[3::7] = 0.0, 1.5  # both bounds reached
    scheduler = DDPMPosteriorScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.2,
        variance_type="analytic",
        analytic_gamma=gamma.tolist(),
        timestep_spacing="leading" if spacing == "custom" else spacing,
    )
    beta_tilde_1 = (1 - alpha_bar[1] / alpha_bar[0]) * (1 - alpha_bar[0]) / (1 - alpha_bar[1])
    at_lower = at_upper = 0
    if spacing == "custom":
        chains = random_chains(num_train_timesteps, 60)
    else:
        chains = [dict(num_inference_steps=n) for n in range(1, num_train_timesteps + 1)]
    for steps in chains:
        scheduler.set_timesteps(**steps)
        kept = scheduler.timesteps.numpy()[::-1]
        a_t, a_s = alpha_bar[kept[1:]], alpha_bar[kept[:-1]]
        beta = 1 - a_t / a_s
        lower = beta * (1 - a_s) / (1 - a_t)  # Theorem 2: beta-tilde ...
        upper = lower + a_s * beta**2 / (1 - a_t) ** 2  # ... plus c^2 ((b - a) / 2)^2, data in [a, b] = [-1, 1]
        variances = analytic_variances(scheduler)
        assert np.all(variances[1:] >= lower * (1 - 1e-12)) and np.all(variances[1:] <= upper * (1 + 1e-12)), steps
        assert variances[0] >= beta_tilde_1 * (1 - 1e-12)
        # sampling draws with these very variances
        np.testing.assert_allclose(np.square(scheduler._fixed_sigmas), variances, rtol=1e-12)
        at_lower += int(np.isclose(variances[1:], lower, rtol=1e-12).sum())
        at_upper += int(np.isclose(variances[1:], upper, rtol=1e-12).sum())
    assert at_lower > 0 and at_upper > 0


def test_gamma_estimate_matches_the_exact_gamma_within_its_standard_error():
    images = torch.from_numpy(gaussian_images(400, seed=5)).reshape(-1, 1, 8, 8).float()
    pipeline = gaussian_pipeline("fixed_small")
    estimate, standard_error = estimate_gamma(pipeline, images, samples_per_timestep=200, seed=0, show_progress=False)
    gamma = exact_gamma()
    assert estimate.shape == standard_error.shape == (T,)
    z = (estimate - gamma) / standard_error
    assert np.all(np.abs(z) < 4.5), z
    # ||eps*||^2 / d is Gamma chi^2_d / d, of standard error Gamma sqrt(2 / d) / sqrt(M) over M plain draws; the
    # noise as a control variate removes most of it at large t, where eps* is nearly eps
    plain = gamma * math.sqrt(2 / 64) / math.sqrt(200)
    assert np.all(standard_error < 1.1 * plain) and standard_error[-1] < 0.2 * plain[-1]
    again, _ = estimate_gamma(pipeline, images, samples_per_timestep=200, seed=0, show_progress=False)
    np.testing.assert_array_equal(again, estimate)


def test_a_gamma_estimate_is_never_negative_and_its_error_counts_the_fitted_slope(capsys):
    """With few draws the control variate's fitted slope can push a mean square below zero; with M = 2 it fitted both
    draws exactly and the standard error printed was 0."""
    values, controls = torch.tensor([[0.0, 0.2, 0.1]]), torch.tensor([[2.0, 4.0, 3.0]])  # Y = 0.1 Z - 0.2
    mean, standard_error = control_variate_mean(values, controls)
    assert mean.tolist() == [0.0] and float(standard_error) < 1e-7  # clamped from -0.1; no residual spread
    values = torch.tensor([[0.0, 0.3, 0.1, 0.2]])
    mean, standard_error = control_variate_mean(values, torch.tensor([[2.0, 4.0, 3.0, 3.0]]))
    residual = torch.tensor([0.0, 0.3, 0.1, 0.2]) - 0.15 * torch.tensor([2.0, 4.0, 3.0, 3.0])  # slope 0.15
    expected = math.sqrt(float(((residual - residual.mean()) ** 2).sum()) / (4 - 2) / 4)  # 2 dof to the fit
    assert float(standard_error) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="`samples_per_timestep` must be at least 3"):
        estimate_gamma(gaussian_pipeline("fixed_small"), torch.zeros(4, 1, 8, 8), samples_per_timestep=2)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_gamma_estimate_reads_the_noise_of_x0_and_v_predictors(prediction_type):
    class AsPrediction(GaussianOptimalDenoiser):  # the same predictor, expressed as x_0 or v
        def forward(self, sample, timestep):
            eps = super().forward(sample, timestep).sample.double()
            a = self.alpha_bar[timestep].reshape(-1, 1, 1, 1)
            x0 = (sample.double() - (1 - a).sqrt() * eps) / a.sqrt()
            output = x0 if prediction_type == "sample" else a.sqrt() * eps - (1 - a).sqrt() * x0
            return type(super().forward(sample, timestep))(sample=output.to(sample.dtype))

    images = torch.from_numpy(gaussian_images(64, seed=6)).reshape(-1, 1, 8, 8).float()
    reference, _ = estimate_gamma(gaussian_pipeline("fixed_small"), images, 8, show_progress=False)
    scheduler = DDPMPosteriorScheduler(**BETAS, prediction_type=prediction_type, clip_sample=False)
    pipeline = DDPMPosteriorPipeline(unet=AsPrediction(ALPHA_BAR.tolist(), DATA_STD**2), scheduler=scheduler)
    np.testing.assert_allclose(estimate_gamma(pipeline, images, 8, show_progress=False)[0], reference, 1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Sampling and the bound use the analytic variances, on the training chain and every respaced one
# ----------------------------------------------------------------------------------------------------------------


def test_step_draws_noise_with_the_analytic_sigma():
    pipeline = gaussian_pipeline("analytic")
    fixed = gaussian_pipeline("fixed_small").scheduler
    for scheduler in (pipeline.scheduler, fixed):
        scheduler.set_timesteps(5)
    x_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = int(fixed.timesteps[1])  # 12 -> 8
    output = pipeline.unet(x_t, torch.tensor([t])).sample
    analytic = pipeline.scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(2)).prev_sample
    small = fixed.step(output, t, x_t, generator=torch.Generator().manual_seed(2)).prev_sample
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    s = int(fixed.timesteps[2])
    beta = 1 - ALPHA_BAR[t] / ALPHA_BAR[s]
    beta_tilde = beta * (1 - ALPHA_BAR[s]) / (1 - ALPHA_BAR[t])
    mean = small - math.sqrt(beta_tilde) * z  # the shared mean, from fixed_small's sigma = sqrt(beta-tilde)
    torch.testing.assert_close(analytic, mean + math.sqrt(conditional_variance(s, t)) * z, rtol=0, atol=1e-5)


def expected_kl_terms(kept: np.ndarray, variance_type: str) -> np.ndarray:
    """
    E[KL(q(x_s | x_t, x_0) || p(x_s | x_t))] per dimension, in bits, for each step s < t of the chain `kept`, under
    the Bayes-optimal mean and a variance sigma^2: 0.5 (log(sigma^2 / beta-tilde) + (beta-tilde + c^2 V) / sigma^2 - 1)
    with V = E Var(x_0 | x_t) = s^2 (1 - abar_t) / Var(x_t) and c the x_0 coefficient of the posterior mean.
    """
    a_t, a_s, s2 = ALPHA_BAR[kept[1:]], ALPHA_BAR[kept[:-1]], DATA_STD**2
    beta = 1 - a_t / a_s
    beta_tilde = beta * (1 - a_s) / (1 - a_t)
    c = beta * np.sqrt(a_s) / (1 - a_t)
    v = s2 * (1 - a_t) / (a_t * s2 + 1 - a_t)
    sigma2 = {"fixed_small": beta_tilde, "fixed_large": beta}.get(variance_type)
    if sigma2 is None:  # analytic: the optimum, where the expected KL is 0.5 log(sigma*^2 / beta-tilde)
        sigma2 = np.array([conditional_variance(s, t) for s, t in zip(kept[:-1], kept[1:], strict=True)])
    return 0.5 * (np.log(sigma2 / beta_tilde) + (beta_tilde + c**2 * v) / sigma2 - 1) / LOG2


@pytest.mark.parametrize("steps", [T, 6])
def test_bound_of_each_chain_with_analytic_variances_matches_the_closed_form_and_is_lowest(steps):
    images = torch.from_numpy(gaussian_images(96, seed=7)).reshape(-1, 1, 8, 8).float()
    results = {}
    for variance_type in ("fixed_small", "fixed_large", "analytic"):
        pipeline = gaussian_pipeline(variance_type, timestep_spacing="linspace")
        results[variance_type] = pipeline.bits_per_dim(
            images,
            generator=torch.Generator().manual_seed(0),
            num_inference_steps=steps,
            clip_denoised=False,
            show_progress=False,
        )
        kept = pipeline.scheduler.timesteps.numpy()[::-1]
        result = results[variance_type]
        assert result.vb_bpd.shape == (96, steps) and result.timesteps[0].tolist() == kept.tolist()
        kl = result.vb_bpd[:, 1:]
        error = kl.sum(dim=1).std() / math.sqrt(96)
        expected = expected_kl_terms(kept, variance_type)
        assert float(kl.sum(dim=1).mean()) == pytest.approx(expected.sum(), abs=4 * float(error))
    # the same x_t for all three: the analytic bound is below both fixed ones, image by image on average
    for fixed in ("fixed_small", "fixed_large"):
        difference = (results[fixed].bpd - results["analytic"].bpd).numpy()
        assert difference.mean() > 4 * difference.std(ddof=1) / math.sqrt(96), fixed


def test_full_respaced_bound_is_the_training_chain_bound():
    pipeline = gaussian_pipeline("analytic", timestep_spacing="linspace")
    images = torch.from_numpy(gaussian_images(16, seed=8)).reshape(-1, 1, 8, 8).float()
    kwargs = dict(clip_denoised=False, show_progress=False)
    training = pipeline.bits_per_dim(images, generator=torch.Generator().manual_seed(3), **kwargs)
    respaced = pipeline.bits_per_dim(
        images, generator=torch.Generator().manual_seed(3), num_inference_steps=T, **kwargs
    )
    torch.testing.assert_close(respaced.bpd, training.bpd, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="at most one of"):
        pipeline.bits_per_dim(images, num_timesteps=5, num_inference_steps=5, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The statistics travel in the config: save/load with and without hf_ddpm; bad statistics refused
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def analytic_pipeline() -> DDPMPosteriorPipeline:
    gamma = np.linspace(0.2, 1.0, 50) ** 0.5
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=50, variance_type="analytic", analytic_gamma=gamma.tolist())
    return DDPMPosteriorPipeline(unet=make_tiny_unet(), scheduler=scheduler)


def test_analytic_pipeline_saves_and_loads_with_and_without_hf_ddpm(analytic_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    analytic_pipeline.save_pretrained(str(folder))
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (
        config["variance_type"] == "analytic"
        and config["analytic_gamma"] == analytic_pipeline.scheduler.config.analytic_gamma
    )
    reloaded = DDPMPosteriorPipeline.from_pretrained(str(folder))
    np.testing.assert_array_equal(_sample(reloaded), _sample(analytic_pipeline))
    fixed = DDPMPosteriorPipeline(
        unet=analytic_pipeline.unet, scheduler=DDPMPosteriorScheduler(num_train_timesteps=50)
    )
    assert not np.array_equal(_sample(fixed), _sample(analytic_pipeline))  # the variances make a difference

    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        # one torch thread, as this module's tests run: another thread count sums in another order (~1e-7 apart)
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), _sample(analytic_pipeline))


@pytest.mark.parametrize(
    "gamma, message",
    [
        (None, "hf-ddpm analytic"),
        ([0.5] * 49, r"one value per training timestep \(50\), got shape \(49,\)"),
        ([0.5] * 49 + [-0.1], "entry t=49 is -0.1"),
        ([float("nan")] + [0.5] * 49, "entry t=0 is nan"),
        ([0.5] * 10 + [float("inf")] + [0.5] * 39, "entry t=10 is inf"),
        ("high", "must be a list of 50 numbers, got str"),
    ],
)
def test_bad_statistics_are_refused_saying_how_to_compute_them(gamma, message):
    with pytest.raises(ValueError, match=message) as error:
        DDPMPosteriorScheduler(num_train_timesteps=50, variance_type="analytic", analytic_gamma=gamma)
    assert "analytic_gamma" in str(error.value) and "hf-ddpm analytic" in str(error.value)


def test_a_saved_folder_with_bad_statistics_fails_to_load_naming_them(analytic_pipeline, tmp_path):
    analytic_pipeline.save_pretrained(str(tmp_path))
    path = tmp_path / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["analytic_gamma"] = config["analytic_gamma"][:-1]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="analytic_gamma"):
        DDPMPosteriorPipeline.from_pretrained(str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# `hf-ddpm analytic` on a diffusers folder in the flat google/ddpm-* layout
# ----------------------------------------------------------------------------------------------------------------


def _digest(folder) -> dict:
    return {
        os.path.relpath(os.path.join(root, name), folder): hashlib.sha256(
            open(os.path.join(root, name), "rb").read()
        ).hexdigest()
        for root, _, files in os.walk(folder)
        for name in files
    }


def test_cli_writes_an_analytic_pipeline_from_a_flat_diffusers_folder(tmp_path, capsys):
    source = tmp_path / "google-layout"
    make_tiny_unet().save_pretrained(str(source))
    (source / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMPipeline",
                "scheduler": ["diffusers", "DDPMScheduler"],
                "unet": ["diffusers", "UNet2DModel"],
            }
        )
    )
    DDPMScheduler(num_train_timesteps=100).save_pretrained(str(source))  # scheduler_config.json at the root
    before = _digest(source)
    output = tmp_path / "analytic"
    command = ["analytic", str(source), "--output_dir", str(output)]
    result = subprocess.run(
        [sys.executable, "-m", "hf_ddpm.cli", *command, "--samples_per_timestep", "4", "--max_images", "40"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "standard error" in result.stdout and "Gamma_t = E||eps||^2/d" in result.stderr  # the bar
    assert _digest(source) == before  # the input untouched
    statistics = json.loads((output / "analytic_gamma.json").read_text())
    assert statistics["samples_per_timestep"] == 4 and statistics["num_images"] == 40
    assert len(statistics["gamma"]) == len(statistics["standard_error"]) == 100
    loaded = DDPMPosteriorPipeline.from_pretrained(str(output))
    assert loaded.scheduler.config.variance_type == "analytic"
    assert loaded.scheduler.config.analytic_gamma == pytest.approx(statistics["gamma"], rel=1e-12)
    assert loaded.scheduler.config.beta_schedule == "linear" and loaded.scheduler.config.num_train_timesteps == 100

    assert main([*command[:-1], str(source)]) == 2
    assert "which is or holds the input" in capsys.readouterr().err
    before_output = _digest(output)  # a second estimate into the folder replaced the model, kept its old results
    assert main([*command, "--samples_per_timestep", "4", "--max_images", "40"]) == 2
    assert f"--output_dir {output} is not empty" in capsys.readouterr().err and _digest(output) == before_output
    assert _digest(source) == before


@pytest.mark.parametrize("output_dir", ["", ".", ".."])
def test_cli_refuses_an_output_dir_that_is_or_holds_the_current_folder(
    tiny_pipeline, tmp_path, monkeypatch, capsys, output_dir
):
    """`--output_dir ""` wrote the new pipeline into the current folder, beside (and over) the user's files."""
    work = tmp_path / "work"
    tiny_pipeline.save_pretrained(str(tmp_path / "model"))
    work.mkdir()
    (work / "model_index.json").write_text("a user's file that a pipeline folder would overwrite")
    monkeypatch.chdir(work)
    before = _digest(tmp_path)
    argv = ["analytic", str(tmp_path / "model"), "--output_dir", output_dir, "--samples_per_timestep", "4"]
    assert main([*argv, "--max_images", "40", "--batch_size", "100"]) == 2
    err = capsys.readouterr().err
    assert f"--output_dir {output_dir!r}" in err and "holds the current folder" in err
    assert _digest(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["model", "work"]


def test_with_analytic_variances_keeps_the_model_and_its_schedule(tiny_pipeline):
    gamma = np.full(50, 0.9)
    analytic = with_analytic_variances(tiny_pipeline, gamma)
    assert analytic.unet is tiny_pipeline.unet
    config = {
        k: v
        for k, v in analytic.scheduler.config.items()
        if k not in ("variance_type", "analytic_gamma") and not k.startswith("_")
    }
    assert config == {k: v for k, v in tiny_pipeline.scheduler.config.items() if k in config}
    assert analytic.scheduler.config.variance_type == "analytic"


def test_cli_refuses_a_class_conditional_model_before_estimating(tmp_path, capsys):
    """Gamma_t of a class-conditional model needs the images' classes: diffusers' UNet failed mid-estimate without."""
    from conftest import TINY_UNET
    from diffusers import UNet2DModel

    unet = UNet2DModel(**TINY_UNET, sample_size=8, in_channels=1, out_channels=1, num_class_embeds=10)
    DDPMPosteriorPipeline(unet=unet, scheduler=DDPMPosteriorScheduler(num_train_timesteps=20)).save_pretrained(
        str(tmp_path / "conditional")
    )
    argv = ["analytic", str(tmp_path / "conditional"), "--output_dir", str(tmp_path / "out")]
    assert main([*argv, "--max_images", "4", "--samples_per_timestep", "3"]) == 2
    err = capsys.readouterr().err
    assert "this model is class-conditional; Analytic-DPM's Gamma_t is estimated for unconditional models" in err
    assert "Gamma_t = E" not in err and not (tmp_path / "out").exists()  # refused before the estimate's bar
