# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The training timestep t: uniform, or importance sampling by the loss' second moment (improved-diffusion's
`LossSecondMomentResampler`, Nichol & Dhariwal section 3.3, eq. 18).

Every process records the losses of all processes, so all draw from the same p_t. Draws use the global torch RNG,
which every checkpoint saves: a resumed run draws the timesteps of a straight one.
"""

import torch


class UniformSampler:
    """t ~ U{0, ..., T-1}, each with weight 1."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = num_timesteps

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """[N] long timesteps and their [N] float32 weights 1 / (T p_t)."""
        timesteps = torch.randint(0, self.num_timesteps, (batch_size,), device=device)
        return timesteps, torch.ones(batch_size, device=device)

    def state_dict(self) -> dict:
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict) -> None:
        saved = int(state["num_timesteps"])
        if saved != self.num_timesteps:
            raise ValueError(f"the checkpoint's timestep sampler has T={saved}, this run T={self.num_timesteps}")


class LossSecondMomentResampler(UniformSampler):
    """
    p_t proportional to sqrt(E[L_t^2]) over the last `history_per_term` losses at each t, mixed with `uniform_prob`
    of the uniform distribution; uniform until every t has a full history.

    The history is a ring buffer per t on the training device, updated and read with tensor operations only (no
    `.item()`, no branch on a tensor's value): a step never waits for the device. `state_dict` stores each history
    oldest first, as improved-diffusion does.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.0001, device=None):
        super().__init__(num_timesteps)
        self.history_per_term, self.uniform_prob = history_per_term, uniform_prob
        dtype = torch.float32 if torch.device(device or "cpu").type == "mps" else torch.float64  # MPS: no float64
        # one extra row: where the losses that a full history drops are written, never read
        self.loss_history = torch.zeros(num_timesteps + 1, history_per_term, dtype=dtype, device=device)
        self.losses_seen = torch.zeros(num_timesteps, dtype=torch.int64, device=device)  # every loss recorded at t

    def probabilities(self) -> torch.Tensor:
        """p_t, [T]: the importance weights once every t has a full history, else uniform."""
        weights = self.loss_history[:-1].square().mean(dim=-1).sqrt()
        weights = weights / weights.sum() * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        warm = (self.losses_seen >= self.history_per_term).all()
        return torch.where(warm, weights / weights.sum(), 1.0 / self.num_timesteps)

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.probabilities()
        # inverse-CDF draw on the device: one uniform number per image
        cdf = p.cumsum(0)
        timesteps = torch.searchsorted(cdf, torch.rand(batch_size, device=device, dtype=cdf.dtype) * cdf[-1])
        timesteps = timesteps.clamp_(max=self.num_timesteps - 1)
        # weights 1 / (T p_t) keep the weighted loss an unbiased estimate of the uniform average (eq. 18)
        return timesteps, (1.0 / (self.num_timesteps * p[timesteps])).float()

    def update_with_all_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Append the [N] losses to the histories of their [N] timesteps in batch order (the same on every process)."""
        timesteps = timesteps.long()
        order = torch.sort(timesteps, stable=True).indices
        sorted_t = timesteps[order]
        # k: how many losses at the same t come before this one in the batch; n: how many the batch has at its t
        k = torch.arange(len(sorted_t), device=sorted_t.device) - torch.searchsorted(sorted_t, sorted_t)
        in_batch = torch.zeros_like(self.losses_seen).index_add_(0, timesteps, torch.ones_like(timesteps))
        n = in_batch[sorted_t]
        # only the last `history_per_term` losses at each t survive: the others are written to the spare row
        rows = torch.where(k >= n - self.history_per_term, sorted_t, self.num_timesteps)
        columns = (self.losses_seen[sorted_t] + k) % self.history_per_term
        self.loss_history.index_put_((rows, columns), losses[order].to(self.loss_history.dtype))
        self.losses_seen += in_batch

    def state_dict(self) -> dict:
        seen = self.losses_seen.cpu()
        # each ring buffer read from its oldest loss: position seen mod H once it has wrapped
        start = torch.where(seen >= self.history_per_term, seen % self.history_per_term, 0)
        columns = (start[:, None] + torch.arange(self.history_per_term)) % self.history_per_term
        history = self.loss_history[:-1].cpu().double().gather(1, columns)
        counts = seen.clamp(max=self.history_per_term)
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": history,
            "loss_counts": counts,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history_per_term, self.uniform_prob = int(state["history_per_term"]), float(state["uniform_prob"])
        history = torch.as_tensor(state["loss_history"])
        history = torch.cat([history, history.new_zeros(1, self.history_per_term)])  # the spare row
        self.loss_history = history.to(self.loss_history.device, self.loss_history.dtype)
        self.losses_seen = torch.as_tensor(state["loss_counts"]).long().to(self.losses_seen.device)  # oldest first
