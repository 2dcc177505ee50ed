# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Samplers of the training timestep t: uniform, or importance sampling by the loss' second moment.

Nichol & Dhariwal (section 3.3, eq. 18) minimize L_vlb = E_{t ~ p_t}[L_t / p_t] with p_t proportional to
sqrt(E[L_t^2]), estimated from the last 10 losses seen at each t; until every t has 10 losses, t is uniform. This is
improved-diffusion's `LossSecondMomentResampler`. Its state is part of every checkpoint, and every process updates it
with the losses of all processes, so all processes hold the same state and draw from the same p_t.

Draws use the global torch RNG, which Accelerate saves and restores with each checkpoint: resumed runs draw the same
timesteps as a straight run.
"""

import numpy as np
import torch


class UniformSampler:
    """t ~ U{0, ..., T-1}, each with weight 1."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = num_timesteps

    def probabilities(self) -> np.ndarray:
        """p_t, [T] float64, summing to 1."""
        return np.full(self.num_timesteps, 1.0 / self.num_timesteps)

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw `batch_size` timesteps: ([N] long timesteps, [N] float32 weights 1 / (T p_t))."""
        timesteps = torch.randint(0, self.num_timesteps, (batch_size,), device=device)
        return timesteps, torch.ones(batch_size, device=device)

    def update_with_all_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the losses of all processes (the same call on every process). Nothing to learn here."""

    def state_dict(self) -> dict:
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict) -> None:
        _check_num_timesteps(self, state)


class LossSecondMomentResampler(UniformSampler):
    """
    Importance sampling with p_t proportional to sqrt(E[L_t^2]) over the last `history_per_term` losses at each t,
    mixed with `uniform_prob` of the uniform distribution; uniform until every t has a full history.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.0001):
        super().__init__(num_timesteps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.loss_history = np.zeros((num_timesteps, history_per_term), dtype=np.float64)
        self.loss_counts = np.zeros(num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history_per_term).all())

    def probabilities(self) -> np.ndarray:
        if not self.warmed_up():
            return super().probabilities()
        weights = np.sqrt(np.mean(self.loss_history**2, axis=-1))
        weights /= weights.sum()
        weights *= 1 - self.uniform_prob
        weights += self.uniform_prob / len(weights)
        return weights / weights.sum()

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.warmed_up():
            return super().sample(batch_size, device)
        p = torch.from_numpy(self.probabilities())
        timesteps = torch.multinomial(p, batch_size, replacement=True)
        # weights 1 / (T p_t) keep the weighted loss an unbiased estimate of the uniform average (eq. 18)
        weights = (1.0 / (self.num_timesteps * p[timesteps])).float()
        return timesteps.to(device), weights.to(device)

    def update_with_all_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each (t, L_t) to the history of t, dropping its oldest loss once full."""
        for t, loss in zip(timesteps.tolist(), losses.double().tolist(), strict=True):
            t = int(t)
            if self.loss_counts[t] == self.history_per_term:
                self.loss_history[t, :-1] = self.loss_history[t, 1:]
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, self.loss_counts[t]] = loss
                self.loss_counts[t] += 1

    def state_dict(self) -> dict:
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": torch.from_numpy(self.loss_history.copy()),
            "loss_counts": torch.from_numpy(self.loss_counts.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        _check_num_timesteps(self, state)
        if "loss_history" not in state:
            raise ValueError("The checkpoint holds a uniform timestep sampler, not a loss-second-moment resampler.")
        self.history_per_term = int(state["history_per_term"])
        self.uniform_prob = float(state["uniform_prob"])
        self.loss_history = torch.as_tensor(state["loss_history"]).numpy().astype(np.float64).copy()
        self.loss_counts = torch.as_tensor(state["loss_counts"]).numpy().astype(np.int64).copy()


def create_timestep_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """`"uniform"` or `"loss-second-moment"` (`"auto"` must be resolved by the caller)."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(num_timesteps)
    raise ValueError(f"`timestep_sampler` must be 'uniform' or 'loss-second-moment', got {name!r}.")


def _check_num_timesteps(sampler: UniformSampler, state: dict) -> None:
    if int(state["num_timesteps"]) != sampler.num_timesteps:
        raise ValueError(
            f"The checkpoint's timestep sampler has T={int(state['num_timesteps'])},"
            f" this run T={sampler.num_timesteps}."
        )
