# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What the loop watches every step, kept on the device: loss sums per timestep quartile and the non-finite check.

`.item()`, `.cpu()` or an `if` on a tensor's value make the host wait for the device, which then idles. These
watchers only queue tensor operations each step; the host reads them once per log line and before anything is saved.
"""

import torch


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training stops before anything trained past that step is saved."""


class LossMeter:
    """Sums of each loss term, overall and per quarter of the timestep range (improved-diffusion's `log_loss_dict`)."""

    def __init__(self, num_train_timesteps: int):
        self.num_train_timesteps = num_train_timesteps
        self.names, self.sums, self.counts = None, None, None  # the sums: [K x 4] per term and quartile

    def add(self, terms: dict[str, torch.Tensor], timesteps: torch.Tensor) -> None:
        """Add a batch: the [B] values of each term, and the [B] timesteps they were drawn at."""
        if self.names is None:
            self.names = sorted(terms)
        values = torch.stack([terms[name].detach().float() for name in self.names])  # [K x B]
        quartile = (timesteps.long() * 4 // self.num_train_timesteps).clamp_(max=3)  # [B]
        if self.sums is None:
            self.sums, self.counts = values.new_zeros(len(self.names), 4), values.new_zeros(4)
        self.sums.index_add_(1, quartile, values)
        self.counts.index_add_(0, quartile, torch.ones_like(values[0]))

    def averages(self, accelerator=None, prefix: str = "") -> dict[str, float]:
        """The averages since the last call, over all processes (call it on each), as {prefix + "loss_q0": ...}."""
        if self.sums is None:
            return {}
        packed = torch.cat([self.sums, self.counts[None]])  # [K + 1 x 4]
        if accelerator is not None and accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, reduction="sum")
        *sums, counts = packed.tolist()
        averages = {}
        for name, per_quartile in zip(self.names, sums, strict=True):
            if sum(counts):
                averages[prefix + name] = sum(per_quartile) / sum(counts)
            averages.update({f"{prefix}{name}_q{q}": per_quartile[q] / counts[q] for q in range(4) if counts[q]})
        self.sums.zero_()
        self.counts.zero_()
        return averages


class NonFiniteGuard:
    """
    Remembers, on the device, the first step whose loss was NaN or infinite; `check` raises about it. The check runs
    every few steps and before every save: a bad step may update the weights in memory, but nothing trained from it
    reaches a checkpoint, a sample grid or the saved pipeline.
    """

    def __init__(self):
        self.first_bad_step = None  # a 0-dim tensor on the device; 0: none yet

    def observe(self, losses: torch.Tensor, step: int) -> None:
        """Record `step` if one of the [B] `losses` is not finite."""
        if self.first_bad_step is None:
            self.first_bad_step = torch.zeros((), dtype=torch.int64, device=losses.device)
        bad = ~torch.isfinite(losses.detach()).all()
        self.first_bad_step = torch.where(bad & (self.first_bad_step == 0), step, self.first_bad_step)

    def check(self, accelerator=None) -> None:
        """Raise `NonFiniteLossError` if a process saw a NaN or inf loss (with `accelerator`: on every process)."""
        if self.first_bad_step is None:
            return
        first = self.first_bad_step.reshape(1)
        if accelerator is not None and accelerator.num_processes > 1:
            first = accelerator.gather(first)
        steps = [step for step in first.tolist() if step > 0]
        if steps:
            raise NonFiniteLossError(
                f"The loss became NaN or infinite at step {min(steps)}; training stopped, and nothing trained from"
                " that step on was saved. Lower --learning_rate (or raise --lr_warmup_steps), check the data, or"
                " resume from the last checkpoint."
            )
