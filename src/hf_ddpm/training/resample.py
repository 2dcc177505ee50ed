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

    needs_losses = False  # whether `update_with_all_losses` must see every step's losses

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

    The history lives on the training device and every operation on it is a tensor operation (no `.item()`, no
    branch on a tensor's value): updating it and drawing from it never waits for the device. Each t keeps a ring
    buffer of its last losses (the second moment does not depend on their order); `state_dict` stores them oldest
    first, the layout of improved-diffusion's resampler.
    """

    needs_losses = True

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.0001):
        super().__init__(num_timesteps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        # one extra row: the writes of losses that a full history would drop land there, never read
        self.loss_history = torch.zeros(num_timesteps + 1, history_per_term, dtype=torch.float64)
        self.losses_seen = torch.zeros(num_timesteps, dtype=torch.int64)  # every loss ever recorded at t

    def warmed_up(self) -> bool:
        return bool((self.losses_seen >= self.history_per_term).all())

    def probabilities(self) -> np.ndarray:
        return self._probabilities().cpu().double().numpy()

    def _probabilities(self) -> torch.Tensor:
        """p_t as a [T] tensor on the history's device: the importance weights once warm, else uniform."""
        weights = self.loss_history[:-1].square().mean(dim=-1).sqrt()
        weights = weights / weights.sum() * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        warm = (self.losses_seen >= self.history_per_term).all()
        return torch.where(warm, weights / weights.sum(), 1.0 / self.num_timesteps)

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        self._move_to(device)
        p = self._probabilities()
        # inverse-CDF draw: one uniform number per image, found in the cumulative distribution on the device
        cdf = p.cumsum(0)
        timesteps = torch.searchsorted(cdf, torch.rand(batch_size, device=device, dtype=cdf.dtype) * cdf[-1])
        timesteps = timesteps.clamp_(max=self.num_timesteps - 1)
        # weights 1 / (T p_t) keep the weighted loss an unbiased estimate of the uniform average (eq. 18)
        weights = (1.0 / (self.num_timesteps * p[timesteps])).float()
        return timesteps, weights

    def update_with_all_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each (t, L_t) to the history of t in batch order, the oldest loss dropping out once it is full."""
        self._move_to(timesteps.device)
        timesteps = timesteps.long()
        order = torch.sort(timesteps, stable=True).indices
        sorted_t = timesteps[order]
        # k: how many losses at the same t come before this one in the batch; n: how many the batch has at its t
        k = torch.arange(len(sorted_t), device=sorted_t.device) - torch.searchsorted(sorted_t, sorted_t)
        in_batch = torch.zeros_like(self.losses_seen).index_add_(0, timesteps, torch.ones_like(timesteps))
        n = in_batch[sorted_t]
        # only the last `history_per_term` losses at each t survive: the others are written to the spare row
        kept = k >= n - self.history_per_term
        rows = torch.where(kept, sorted_t, self.num_timesteps)
        columns = (self.losses_seen[sorted_t] + k) % self.history_per_term
        self.loss_history.index_put_((rows, columns), losses[order].to(self.loss_history.dtype))
        self.losses_seen += in_batch

    def _move_to(self, device: torch.device) -> None:
        if self.loss_history.device != torch.device(device):
            dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64  # MPS has no float64
            self.loss_history = self.loss_history.to(device, dtype)
            self.losses_seen = self.losses_seen.to(device)

    def state_dict(self) -> dict:
        seen = self.losses_seen.cpu()
        counts = seen.clamp(max=self.history_per_term)
        # the ring buffer of each t read from its oldest loss: position seen mod H once it has wrapped
        start = torch.where(seen >= self.history_per_term, seen % self.history_per_term, 0)
        columns = (start[:, None] + torch.arange(self.history_per_term)) % self.history_per_term
        history = self.loss_history[:-1].cpu().double().gather(1, columns)
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": history,
            "loss_counts": counts,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_num_timesteps(self, state)
        if "loss_history" not in state:
            raise ValueError("The checkpoint holds a uniform timestep sampler, not a loss-second-moment resampler.")
        self.history_per_term = int(state["history_per_term"])
        self.uniform_prob = float(state["uniform_prob"])
        history = torch.as_tensor(state["loss_history"]).double()
        device = self.loss_history.device
        self.loss_history = torch.cat([history, history.new_zeros(1, self.history_per_term)]).to(device)
        self.losses_seen = torch.as_tensor(state["loss_counts"]).long().to(device)  # oldest first: no wrap yet
        self.loss_history = self.loss_history.to(torch.float32 if device.type == "mps" else torch.float64)


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
