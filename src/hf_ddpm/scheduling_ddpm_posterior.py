# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The DDPM scheduler of Ho et al. 2020 and Nichol & Dhariwal 2021: the true posterior, learned and analytic
variances, exact respacing and the variational bound. It imports only torch, numpy and diffusers: it travels as remote
code beside `scheduler_config.json`.
"""

import math
from typing import Literal, get_args

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler, DDPMSchedulerOutput, rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VarianceType = Literal[
    "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range", "analytic"
]
VARIANCE_TYPES = get_args(VarianceType)
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
ANALYTIC_COMMAND = "hf-ddpm analytic MODEL --output_dir NEW_MODEL"  # computes `analytic_gamma`
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
MAX_TRAIN_TIMESTEPS = 100_000


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, allowed))}, got {value!r}.")


def betas_for_alpha_bar(num_diffusion_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """The cosine schedule of Nichol & Dhariwal (eq. 17): alpha_bar(t) = cos^2((t + s) / (1 + s) pi / 2)."""
    steps = np.arange(num_diffusion_timesteps + 1, dtype=np.float64) / num_diffusion_timesteps
    alpha_bar = np.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def make_betas(
    num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str, trained_betas=None
) -> np.ndarray:
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float64).reshape(-1)
        if betas.shape[0] != num_train_timesteps:
            raise ValueError(
                f"`trained_betas` has {betas.shape[0]} values but `num_train_timesteps` is {num_train_timesteps}."
            )
        return betas
    _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # the latent diffusion schedule
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_train_timesteps)
    # "sigmoid": the GeoDiff schedule
    sigmoid = 1.0 / (1.0 + np.exp(-np.linspace(-6, 6, num_train_timesteps, dtype=np.float64)))
    return sigmoid * (beta_end - beta_start) + beta_start


def check_analytic_gamma(analytic_gamma, variance_type: str, num_train_timesteps: int) -> np.ndarray | None:
    """`analytic_gamma` as a float64 array of one finite value >= 0 per training timestep, or None."""
    remedy = f"compute them with `{ANALYTIC_COMMAND}`"
    if analytic_gamma is None:
        if variance_type == "analytic":
            raise ValueError(
                "variance_type='analytic' needs `analytic_gamma`, the statistics E||eps_theta(x_t, t)||^2 / d of the"
                f" model on its training data: {remedy}."
            )
        return None
    try:
        gamma = np.asarray(analytic_gamma, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`analytic_gamma` must be a list of {num_train_timesteps} numbers, got {type(analytic_gamma).__name__};"
            f" {remedy}."
        ) from None
    if gamma.shape != (num_train_timesteps,):
        raise ValueError(
            f"`analytic_gamma` must hold one value per training timestep ({num_train_timesteps}), got shape"
            f" {gamma.shape}; {remedy}."
        )
    bad = np.flatnonzero(~np.isfinite(gamma) | (gamma < 0))
    if len(bad):
        raise ValueError(
            f"`analytic_gamma` must be finite and >= 0, but entry t={bad[0]} is {gamma[bad[0]]}; {remedy}."
        )
    return gamma


def analytic_variance(
    alphas_cumprod: np.ndarray, alphas_cumprod_prev: np.ndarray, gamma: np.ndarray, decoder_variance: float
) -> np.ndarray:
    """
    Analytic-DPM's optimal variance of each step of a chain (Bao et al. 2022, arXiv 2201.06503, Theorem 1):
    sigma*_n^2 = beta-tilde_n + c_n^2 E Var(x_0 | x_n), with E Var(x_0 | x_n) = (1 - alpha_bar_n) / alpha_bar_n
    (1 - Gamma_n) clipped to [0, 1] (Theorem 2, data in [-1, 1]); the decoder's floored at `decoder_variance` (where
    Gamma_0 nears 1 it falls into the Monte-Carlo noise).
    """
    betas = 1.0 - alphas_cumprod / alphas_cumprod_prev
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    x0_coefficient = betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    with np.errstate(divide="ignore", invalid="ignore"):  # alpha_bar_T = 0 (zero terminal SNR): x_0 unknown, 1
        x0_variance = (1.0 - alphas_cumprod) / alphas_cumprod * (1.0 - gamma)
    x0_variance = np.clip(np.where(alphas_cumprod > 0, x0_variance, 1.0), 0.0, 1.0)
    variance = posterior_variance + x0_coefficient**2 * x0_variance
    variance[0] = max(variance[0], decoder_variance)
    return variance


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """
    The decoder term L_0 (Ho et al. eq. 13): log-likelihood of `x` in [-1, 1], quantized to 256 levels, under
    N(means, exp(log_scales)^2); with the exact normal CDF, where the Improved DDPM code has a tanh approximation.
    """
    inv_stdv = torch.exp(-log_scales)
    upper = (x - means + 1.0 / 255.0) * inv_stdv
    lower = (x - means - 1.0 / 255.0) * inv_stdv
    # Phi(upper) - Phi(lower) cancels when both are near 1: use Phi(-lower) - Phi(-upper) there (sign -1)
    sign = torch.where(lower > 0, -1.0, 1.0)
    cdf_delta = (torch.special.ndtr(sign * upper) - torch.special.ndtr(sign * lower)) * sign
    # the edge bins: log Phi(upper) at x = -1, log(1 - Phi(lower)) = log Phi(-lower) at x = 1 (one call for both)
    log_edge = torch.special.log_ndtr(torch.where(x < 0, upper, -lower))
    return torch.where(x.abs() > 0.999, log_edge, torch.log(cdf_delta.clamp(min=1e-12)))


def mean_over_pixels(tensor: torch.Tensor) -> torch.Tensor:
    """[N x C x H x W] -> [N]."""
    return tensor.mean(dim=tuple(range(1, tensor.ndim)))


class DDPMPosteriorScheduler(SchedulerMixin, ConfigMixin):
    """
    The DDPM ancestral sampler on the true posterior q(x_{t-1} | x_t, x_0), with exact respacing and the variational
    bound in bits/dim. It takes [`~diffusers.DDPMScheduler`]'s config and gives its `step()` outputs for a generator,
    but with float64 schedules, `learned` read as a log-variance (the Improved DDPM code), `fixed_large_log` not NaN,
    unknown options refused, and no noise at a chain's last step whatever its timestep.

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, clip_sample, clip_sample_range,
            prediction_type, thresholding, dynamic_thresholding_ratio, sample_max_value, steps_offset,
            rescale_betas_zero_snr: as in `DDPMScheduler` (`squaredcos_cap_v2` is Improved DDPM's cosine schedule).
        variance_type (`str`, defaults to `"fixed_small"`): sigma_t^2 of the reverse step: `fixed_small`
            (beta-tilde_t), `fixed_large` (beta_t), their `_log` twins (computed in log space), `learned` (the model's
            extra channels are log sigma^2), `learned_range` (they are v in [-1, 1]: log sigma^2 = v' log beta_t +
            (1 - v') log beta-tilde_t, v' = (v + 1) / 2), `analytic` (Analytic-DPM, from `analytic_gamma`).
        analytic_gamma (`list[float]`, *optional*): Gamma_t = E||eps_theta(x_t, t)||^2 / d per training timestep, as
            `hf-ddpm analytic` estimates them; needed by `analytic`.
        timestep_spacing (`str`, defaults to `"leading"`): how `set_timesteps(n)` picks n timesteps. Improved DDPM's
            respacing "n" is `linspace`, its "ddimN" `leading`.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: VarianceType = "fixed_small",
        analytic_gamma: list[float] | None = None,
        clip_sample: bool = True,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)):
            raise TypeError(f"`num_train_timesteps` must be an int, got {type(num_train_timesteps).__name__}.")
        if not 1 <= num_train_timesteps <= MAX_TRAIN_TIMESTEPS:  # the schedules are float64 arrays of this length
            raise ValueError(
                f"`num_train_timesteps` must be in [1, {MAX_TRAIN_TIMESTEPS:,}] (published models use up to 4,000),"
                f" got {num_train_timesteps:,}."
            )
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            if prediction_type == "epsilon":
                raise ValueError(
                    "`rescale_betas_zero_snr=True` makes alpha_bar_T = 0, where an epsilon prediction cannot give x_0;"
                    " use `prediction_type` 'v_prediction' or 'sample'."
                )
            betas = rescale_zero_terminal_snr(torch.from_numpy(betas)).numpy()  # diffusers', in float64 here
        if not (np.all(betas > 0) and np.all(betas <= 1)):
            bad = betas[~((betas > 0) & (betas <= 1))][0]  # NaN too
            raise ValueError(
                f"Every beta must lie in (0, 1]; the schedule (beta_schedule={beta_schedule!r},"
                f" beta_start={beta_start}, beta_end={beta_end}) contains {bad}."
            )

        self._analytic_gamma = check_analytic_gamma(analytic_gamma, variance_type, num_train_timesteps)
        if analytic_gamma is None:  # no key in the config: `X.from_config(config)` warns about keys X does not take
            self._internal_dict = FrozenDict({k: v for k, v in self.config.items() if k != "analytic_gamma"})
        self._alphas_cumprod64 = np.cumprod(1.0 - betas)
        # beta-tilde_1 of the training chain: the decoder's variance floor of the analytic variance in every chain
        self._decoder_variance = float(
            betas[1] * (1.0 - self._alphas_cumprod64[0]) / (1.0 - self._alphas_cumprod64[1])
            if num_train_timesteps > 1
            else betas[0]
        )
        # the public float32 tensors of diffusers.DDPMScheduler
        self.betas = torch.from_numpy(betas).float()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.from_numpy(self._alphas_cumprod64).float()
        self.init_noise_sigma = 1.0
        self.variance_type = variance_type
        self._train_chain = self._chain_terms(np.arange(num_train_timesteps))
        self._tensors = {}  # (name, respaced, device, dtype) -> a chain's term as a tensor, for `_gather`
        self._set_chain(np.arange(num_train_timesteps)[::-1].copy(), num_inference_steps=None, custom=False)

    def _chain_terms(self, kept_timesteps: np.ndarray) -> dict[str, np.ndarray]:
        """
        Every per-step term of the chain visiting `kept_timesteps` (ascending). Respacing (Nichol & Dhariwal,
        section 4) keeps alpha_bar at those timesteps and recomputes beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}.
        """
        alphas_cumprod = self._alphas_cumprod64[kept_timesteps]
        alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
        betas = 1.0 - alphas_cumprod / alphas_cumprod_prev
        # Ho et al. eq. 7: posterior variance beta-tilde and the two coefficients of its mean
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # beta-tilde_0 = 0: clip the log at the first step to beta-tilde_1, as the Improved DDPM code does
        first = posterior_variance[1] if len(posterior_variance) > 1 else betas[0]
        posterior_log_variance_clipped = np.log(np.concatenate([[first], posterior_variance[1:]]))
        if self._analytic_gamma is None:
            log_analytic_variance = np.full(len(kept_timesteps), np.nan)
        else:
            gamma = self._analytic_gamma[kept_timesteps]
            variance = analytic_variance(alphas_cumprod, alphas_cumprod_prev, gamma, self._decoder_variance)
            log_analytic_variance = np.log(variance)
        return {
            "timesteps": kept_timesteps,
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
            # sigma^2 = beta_t, but beta-tilde_1 at the first step: a better decoder variance (Improved DDPM code)
            "log_betas_fixed_large": np.log(np.concatenate([[first], betas[1:]])),
            "log_betas": np.log(betas),
            "log_analytic_variance": log_analytic_variance,
        }

    def _set_chain(self, timesteps: np.ndarray, num_inference_steps: int | None, custom: bool, device=None) -> None:
        """Install the sampling chain `timesteps` (descending) and its terms."""
        self.timesteps = torch.from_numpy(timesteps.astype(np.int64)).to(device)
        self.num_inference_steps = num_inference_steps
        self.custom_timesteps = custom
        self._chain = self._chain_terms(timesteps[::-1].copy())
        self._step_index = {int(t): i for i, t in enumerate(self._chain["timesteps"])}
        self._fixed_sigmas = self._chain_fixed_sigmas(self._chain)
        positions = np.full(self.config.num_train_timesteps, -1, dtype=np.int64)
        positions[self._chain["timesteps"]] = np.arange(len(timesteps))
        self._chain_positions_by_timestep = torch.from_numpy(positions)
        self._tensors = {key: tensor for key, tensor in self._tensors.items() if not key[1]}  # the old chain's go

    def _chain_fixed_sigmas(self, terms: dict[str, np.ndarray]) -> list[float]:
        """sigma_n of each step for the variance types that do not read the model."""
        variance_type = self.config.variance_type
        if variance_type == "analytic":
            return np.exp(0.5 * terms["log_analytic_variance"]).tolist()
        if variance_type.startswith("fixed_large"):
            return np.sqrt(terms["betas"]).tolist()
        return np.sqrt(np.maximum(terms["posterior_variance"], 1e-20)).tolist()

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Set the sampling chain: `num_inference_steps` spaced by `config.timestep_spacing`, or custom descending
        `timesteps` in [0, T). A shorter chain is respaced exactly, so every variance type stays correct.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` or `timesteps`.")
        if timesteps is not None:
            chain = np.asarray([int(t) for t in timesteps], dtype=np.int64)
            if chain.ndim != 1 or len(chain) == 0:
                raise ValueError("`timesteps` must be a non-empty list of ints.")
            if np.any(np.diff(chain) >= 0):
                raise ValueError(f"`timesteps` must be strictly descending, got {chain.tolist()}.")
            if chain[0] >= num_train_timesteps or chain[-1] < 0:
                raise ValueError(f"`timesteps` must lie in [0, {num_train_timesteps}), got {chain.tolist()}.")
            self._set_chain(chain, num_inference_steps=None, custom=True, device=device)
            return
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
            raise TypeError(f"`num_inference_steps` must be an int, got {type(num_inference_steps).__name__}.")
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` must be between 1 and num_train_timesteps={num_train_timesteps}, got"
                f" {num_inference_steps}."
            )
        chain = self._spaced_timesteps(num_inference_steps)
        if chain[0] >= num_train_timesteps:
            raise ValueError(
                f"`steps_offset`={self.config.steps_offset} pushes timestep {chain[0]} past num_train_timesteps."
            )
        self._set_chain(chain, num_inference_steps=num_inference_steps, custom=False, device=device)

    def _spaced_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """Descending timesteps per Table 2 of arXiv 2305.08891, as diffusers.DDPMScheduler spaces them."""
        num_train_timesteps = self.config.num_train_timesteps
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            return np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1].astype(np.int64)
        if spacing == "leading":
            step_ratio = num_train_timesteps // num_inference_steps
            timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].astype(np.int64)
            return timesteps + self.config.steps_offset
        step_ratio = num_train_timesteps / num_inference_steps  # "trailing"
        # diffusers' np.arange(T, 0, -step_ratio) holds one float step too many for some counts (62 of 1..1000 when
        # T = 1000), ending the chain at -1: its first n values are the chain
        timesteps = np.arange(num_train_timesteps, 0, -step_ratio)[:num_inference_steps]
        return np.round(timesteps).astype(np.int64) - 1

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The next timestep of the chain (-1 after its last), typed as `DDPMScheduler.previous_timestep` types it."""
        index = self._index_of(timestep)
        if self.custom_timesteps or self.num_inference_steps:
            return self.timesteps[len(self.timesteps) - index] if index > 0 else torch.tensor(-1)
        return timestep - 1

    def _index_of(self, timestep: int | torch.Tensor) -> int:
        """The position of `timestep` counted from the chain's end (0 is its last step, the decoder)."""
        try:
            return self._step_index[int(timestep)]
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"`timestep` {timestep!r} is not in the current chain of {len(self._step_index)} timesteps"
                f" (from {int(self.timesteps[0])} down to {int(self.timesteps[-1])}); call `set_timesteps` first."
            ) from None

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def _split_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """The model output's mean part and, from a 2x-channel model, its variance part."""
        channels = sample.shape[1]
        learned = self.config.variance_type in LEARNED_VARIANCE_TYPES
        allowed = (2 * channels,) if learned else (channels, 2 * channels)
        same_layout = model_output.shape[:1] + model_output.shape[2:] == sample.shape[:1] + sample.shape[2:]
        if not same_layout or model_output.shape[1] not in allowed:
            takes = f"2 x {channels} channels" if learned else f"{channels} channels (2 x {channels} with variances)"
            raise ValueError(
                f"`model_output` of shape {tuple(model_output.shape)} does not fit `sample` of shape"
                f" {tuple(sample.shape)}: variance_type={self.config.variance_type!r} takes {takes}."
            )
        if model_output.shape[1] == 2 * channels:
            return model_output[:, :channels], model_output[:, channels:]
        return model_output, None

    def _predict_original_sample(self, model_output, sample, sqrt_alpha_prod, sqrt_one_minus_alpha_prod):
        """x_0 from the model output: Ho et al. eq. 15 for epsilon, the identity for sample, and v's inverse."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            return (sample - sqrt_one_minus_alpha_prod * model_output) / sqrt_alpha_prod
        if prediction_type == "sample":
            return model_output.clone()
        return sqrt_alpha_prod * sample - sqrt_one_minus_alpha_prod * model_output

    _threshold_sample = DDPMScheduler._threshold_sample

    def _clip(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        if self.config.thresholding:
            return self._threshold_sample(pred_original_sample)
        if self.config.clip_sample:
            bound = self.config.clip_sample_range
            return pred_original_sample.clamp_(-bound, bound)
        return pred_original_sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """
        One step of ancestral sampling, x_{t-1} ~ N(mu(x_t, x_0_hat), sigma_t^2 I), from the `model_output` at
        `timestep` (one of `self.timesteps`) for `sample` x_t, [N x C x ...] ([N x 2C x ...] with learned variances).
        The same `generator` draws the same noise as `DDPMScheduler.step`. Returns a `DDPMSchedulerOutput` (or a
        tuple): `prev_sample` x_{t-1} and `pred_original_sample`, the clipped x_0.
        """
        model_output, predicted_variance = self._split_model_output(model_output, sample)
        index = self._index_of(timestep)
        # plain floats: no tensor indexing or 0-dim tensor arithmetic on the sampling hot path
        terms = {name: float(values[index]) for name, values in self._chain.items()}

        # 1. x_0 from the model output (Ho et al. eq. 15), then clipped or thresholded
        pred_original_sample = self._predict_original_sample(
            model_output, sample, terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"]
        )
        pred_original_sample = self._clip(pred_original_sample)

        # 2. x_{t-1} = mu(x_t, x_0) + sigma_t z, mu = coef1 x_0 + coef2 x_t (Ho et al. eq. 7); no noise at the last
        # step, where the decoder's mean is the sample
        variance_type = self.config.variance_type
        prev_sample = torch.mul(sample, terms["posterior_mean_coef2"])
        prev_sample.add_(pred_original_sample, alpha=terms["posterior_mean_coef1"])
        min_log, max_log = terms["posterior_log_variance_clipped"], terms["log_betas"]
        if index > 0:
            # drawn as DDPMScheduler draws it: randn fills the logical shape, whatever the sample's memory layout
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            if variance_type == "learned_range":
                # Nichol & Dhariwal eq. 15: log sigma^2 = v' log beta + (1 - v') log beta-tilde, v' = (v + 1) / 2,
                # so sigma = exp(v (max_log - min_log) / 4 + (max_log + min_log) / 4)
                sigma = torch.mul(predicted_variance, (max_log - min_log) / 4).add_((max_log + min_log) / 4).exp_()
                prev_sample.addcmul_(sigma, noise)
            elif variance_type == "learned":  # the model outputs log sigma^2 (Improved DDPM code)
                prev_sample.addcmul_(torch.exp(0.5 * predicted_variance), noise)
            else:
                prev_sample.add_(noise, alpha=self._fixed_sigmas[index])

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _gather(self, name: str, timesteps: torch.Tensor, like: torch.Tensor, respaced: bool = False) -> torch.Tensor:
        """
        The term `name` of the training chain (of the current one if `respaced`) at training `timesteps`, as
        [N x 1 x ...] against the [N x ...] tensor `like`; each term is cast to a device and dtype once.
        """
        timesteps = self._check_train_timesteps(timesteps, like)
        key = (name, respaced, like.device, like.dtype)
        if key not in self._tensors:
            terms = self._chain if respaced else self._train_chain
            self._tensors[key] = torch.from_numpy(terms[name]).to(like.device, like.dtype)
        positions = self._chain_positions_by_timestep.to(timesteps.device)[timesteps] if respaced else timesteps
        if respaced and bool((positions < 0).any()):
            outside = int(timesteps[positions < 0][0])
            raise ValueError(
                f"`timesteps` holds {outside}, which is not in the current chain of {len(self._step_index)} timesteps;"
                " with `respaced=True` call `set_timesteps` first and pass timesteps of `scheduler.timesteps`."
            )
        return self._tensors[key][positions].reshape(-1, *([1] * (like.ndim - 1)))

    def _check_train_timesteps(self, timesteps, like: torch.Tensor) -> torch.Tensor:
        """`timesteps` as a [1] or [N] long tensor on the device of the [N x ...] tensor `like`, each in [0, T)."""
        timesteps = torch.as_tensor(timesteps, device=like.device).long().reshape(-1)
        if timesteps.shape[0] not in (1, like.shape[0]):
            raise ValueError(f"`timesteps` has {timesteps.shape[0]} entries for a batch of {like.shape[0]}.")
        # asserted asynchronously: an `if` on the values would make the host wait for the device at every call
        in_range = ((timesteps >= 0) & (timesteps < self.config.num_train_timesteps)).all()
        message = f"`timesteps` must lie in [0, {self.config.num_train_timesteps})."
        try:
            torch._assert_async(in_range, message)
        except RuntimeError as error:
            raise ValueError(message) from error
        return timesteps

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. eq. 4)."""
        if noise.shape != original_samples.shape:
            raise ValueError(
                f"`noise` {tuple(noise.shape)} and `original_samples` {tuple(original_samples.shape)} differ."
            )
        return (
            self._gather("sqrt_alphas_cumprod", timesteps, original_samples) * original_samples
            + self._gather("sqrt_one_minus_alphas_cumprod", timesteps, original_samples) * noise
        )

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """The v-prediction target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (arXiv 2202.00512)."""
        if noise.shape != sample.shape:
            raise ValueError(f"`noise` {tuple(noise.shape)} and `sample` {tuple(sample.shape)} differ.")
        return (
            self._gather("sqrt_alphas_cumprod", timesteps, sample) * noise
            - self._gather("sqrt_one_minus_alphas_cumprod", timesteps, sample) * sample
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor, respaced: bool = False
    ):
        """
        q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7); with `respaced`, q(x_s | x_t, x_0) for s the timestep before t in
        the current chain. Returns the mean [N x ...], the variance and the clipped log-variance [N x 1 x ...].
        """
        mean = (
            self._gather("posterior_mean_coef1", timesteps, x_t, respaced) * x_start
            + self._gather("posterior_mean_coef2", timesteps, x_t, respaced) * x_t
        )
        return (
            mean,
            self._gather("posterior_variance", timesteps, x_t, respaced),
            self._gather("posterior_log_variance_clipped", timesteps, x_t, respaced),
        )

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        clip_denoised: bool = False,
        respaced: bool = False,
    ) -> dict[str, torch.Tensor]:
        """
        The model's p(x_{t-1} | x_t) at training `timesteps` [N] (with `respaced`, the reverse step of the current
        chain, as `step()` samples it): a dict of `mean`, `log_variance` and `pred_original_sample` (clipped to
        [-1, 1] with `clip_denoised`).
        """
        model_output, predicted_variance = self._split_model_output(model_output, x_t)
        log_variance = self._model_log_variance(predicted_variance, timesteps, x_t, respaced)
        pred_original_sample = self._predict_original_sample(
            model_output,
            x_t,
            self._gather("sqrt_alphas_cumprod", timesteps, x_t),
            self._gather("sqrt_one_minus_alphas_cumprod", timesteps, x_t),
        )
        if clip_denoised:
            pred_original_sample = pred_original_sample.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_original_sample, x_t, timesteps, respaced)
        return {"mean": mean, "log_variance": log_variance, "pred_original_sample": pred_original_sample}

    def _model_log_variance(self, predicted_variance, timesteps, x_t, respaced: bool = False) -> torch.Tensor:
        variance_type = self.config.variance_type
        if variance_type == "learned":
            return predicted_variance
        if variance_type == "learned_range":
            min_log = self._gather("posterior_log_variance_clipped", timesteps, x_t, respaced)
            max_log = self._gather("log_betas", timesteps, x_t, respaced)
            frac = (predicted_variance + 1) / 2
            return frac * max_log + (1 - frac) * min_log
        if variance_type == "analytic":
            return self._gather("log_analytic_variance", timesteps, x_t, respaced)
        if variance_type.startswith("fixed_large"):
            return self._gather("log_betas_fixed_large", timesteps, x_t, respaced)
        return self._gather("posterior_log_variance_clipped", timesteps, x_t, respaced)

    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        clip_denoised: bool = False,
        respaced: bool = False,
    ) -> torch.Tensor:
        """
        The term L_{t-1} of the bound, [N] bits/dim, of x_0 `x_start` [N x C x ...] in [-1, 1] at its `x_t` and
        training `timesteps` [N] with the `model_output` there: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for
        t > 0, the decoder NLL -log p(x_0 | x_1) at t = 0. With `respaced`, the terms of the current chain (KL to its
        previous timestep, the decoder at its first), which with `prior_bpd(respaced=True)` sum to its bound.
        """
        timesteps = self._check_train_timesteps(timesteps, x_t).expand(x_t.shape[0])
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, timesteps, respaced)
        model = self.p_mean_variance(model_output, x_t, timesteps, clip_denoised=clip_denoised, respaced=respaced)
        kl = mean_over_pixels(normal_kl(true_mean, true_log_variance, model["mean"], model["log_variance"]))
        # the decoder term of every image, kept where the chain's first step is: selecting the images would read the
        # timesteps back to the host (a wait for the device at every training step)
        is_decoder = timesteps == (int(self._chain["timesteps"][0]) if respaced else 0)
        log_scales = (0.5 * model["log_variance"]).expand_as(x_start)
        decoder_nll = -mean_over_pixels(discretized_gaussian_log_likelihood(x_start, model["mean"], log_scales))
        return torch.where(is_decoder, decoder_nll, kl) / math.log(2.0)

    def prior_bpd(self, x_start: torch.Tensor, respaced: bool = False) -> torch.Tensor:
        """
        KL(q(x_T | x_0) || N(0, I)) of each example of [N x C x ...], in bits/dim; with `respaced`, at the current
        chain's last timestep.
        """
        top = int(self._chain["timesteps"][-1]) if respaced else self.config.num_train_timesteps - 1
        last = torch.full((x_start.shape[0],), top, device=x_start.device)
        mean = self._gather("sqrt_alphas_cumprod", last, x_start) * x_start
        log_variance = torch.log1p(-self._gather("alphas_cumprod", last, x_start))
        return mean_over_pixels(
            normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(mean))
        ) / math.log(2.0)
