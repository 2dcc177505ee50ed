# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What the loop watches every step, kept on the device: loss sums per timestep quartile and the non-finite check.

A training step must not wait for the device: `.item()`, `.cpu()`, `.tolist()` or an `if` on a tensor's value make
the host wait for every queued kernel, which on a GPU leaves it idle while the host catches up. Both watchers here
only queue tensor operations each step; the host reads them once per log line (`LossMeter.averages`,
`NonFiniteGuard.check`), which the loop also does before anything is saved.
"""

import torch


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training stops before anything trained past that step is saved."""


class LossMeter:
    """
    Sums of each loss term, overall and per quarter of the timestep range (improved-diffusion's `log_loss_dict`),
    accumulated on the device between two log lines.

    Args:
        num_train_timesteps (`int`): T, to split the timesteps into quartiles.
    """

    def __init__(self, num_train_timesteps: int):
        self.num_train_timesteps = num_train_timesteps
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None  # [K x 4] per term and quartile
        self.counts: torch.Tensor | None = None  # [4]

    def add(self, terms: dict[str, torch.Tensor], timesteps: torch.Tensor) -> None:
        """Add a batch: [B] tensors of each term, and the [B] timesteps they were drawn at."""
        if self.names is None:
            self.names = sorted(terms)
        values = torch.stack([terms[name].detach().float() for name in self.names])  # [K x B]
        quartile = (timesteps.long() * 4 // self.num_train_timesteps).clamp_(max=3)  # [B]
        if self.sums is None:
            self.sums = values.new_zeros(len(self.names), 4)
            self.counts = values.new_zeros(4)
        self.sums.index_add_(1, quartile, values)
        self.counts.index_add_(0, quartile, torch.ones_like(values[0]))

    def averages(self, accelerator=None, prefix: str = "") -> dict[str, float]:
        """
        The averages since the last call, over all processes (a sum-reduce: every process must call it), as
        `{prefix + "loss": ..., prefix + "loss_q0": ..., ...}`; the one host transfer of the meter. Resets the sums.
        """
        if self.sums is None:
            return {}
        packed = torch.cat([self.sums.flatten(), self.counts])
        if accelerator is not None and accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, reduction="sum")
        packed = packed.tolist()
        num_terms = len(self.names)
        counts = packed[num_terms * 4 :]
        averages = {}
        for k, name in enumerate(self.names):
            per_quartile = packed[k * 4 : k * 4 + 4]
            if sum(counts):
                averages[prefix + name] = sum(per_quartile) / sum(counts)
            for q in range(4):
                if counts[q]:
                    averages[f"{prefix}{name}_q{q}"] = per_quartile[q] / counts[q]
        self.sums.zero_()
        self.counts.zero_()
        return averages


class NonFiniteGuard:
    """
    Remembers, on the device, the first step whose loss was NaN or infinite; `check` raises about it.

    The check runs every few steps and before every save, so a step with a bad loss may still update the weights in
    memory, but nothing trained from it reaches a checkpoint, a sample grid or the saved pipeline.
    """

    def __init__(self):
        self.first_bad_step: torch.Tensor | None = None  # 0: none yet

    def observe(self, losses: torch.Tensor, step: int) -> None:
        """Record `step` if any of the [B] `losses` is not finite (a tensor operation: no wait for the device)."""
        if self.first_bad_step is None:
            self.first_bad_step = torch.zeros((), dtype=torch.int64, device=losses.device)
        bad = ~torch.isfinite(losses.detach()).all()
        self.first_bad_step = torch.where(bad & (self.first_bad_step == 0), step, self.first_bad_step)

    def check(self, accelerator=None) -> None:
        """Raise `NonFiniteLossError` if some process saw a non-finite loss (every process must call it)."""
        if self.first_bad_step is None:
            return
        first = self.first_bad_step.reshape(1)
        if accelerator is not None and accelerator.num_processes > 1:
            first = accelerator.gather(first)
        steps = [step for step in first.tolist() if step > 0]
        if steps:
            raise NonFiniteLossError(_non_finite_message(min(steps)))


def _non_finite_message(step: int) -> str:
    return (
        f"The loss became NaN or infinite at step {step}; training stopped, and nothing trained from that step on"
        " was saved. Lower --learning_rate (or raise --lr_warmup_steps), check the data, or resume from the last"
        " checkpoint."
    )
