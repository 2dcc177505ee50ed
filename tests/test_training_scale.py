"""Tests of training at scale (issue 16): a step with no host sync, speed switches, lazily decoded data, the GPU benchmark.

Real components of the real loop on a tiny UNet; the data-size tests run training as subprocesses and compare their
peak resident memory.
"""

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from hf_ddpm.training import parse_args
from hf_ddpm.training.loop import build_accelerator, build_components, build_dataloader, load_data, train_step
from hf_ddpm.training.metrics import LossMeter

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--model_preset", "tiny",
    "--ddpm_num_steps", "20",
    "--ddpm_num_inference_steps", "4",
    "--eval_batch_size", "4",
    "--bpd_num_timesteps", "4",
    "--bpd_num_images", "16",
    "--train_batch_size", "16",
    "--max_train_steps", "8",
    "--lr_warmup_steps", "1",
    "--logger", "none",
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def build_step(tmp_path: Path, *flags: str):
    """The loop's components for `flags` and an endless iterator over its prepared dataloader."""
    args = parse_args([*TINY, "--output_dir", str(tmp_path), *flags])
    accelerator = build_accelerator(args)
    dataset, _, _ = load_data(args, show_progress=False)
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    components, dataloader = build_components(args, accelerator, dataloader)

    def batches():
        while True:
            yield from dataloader

    return args, components, batches()


# ----------------------------------------------------------------------------------------------------------------
# No host sync in a step
# ----------------------------------------------------------------------------------------------------------------

# every way a tensor's value reaches the host: each makes the host wait for the device's queue
HOST_READS = ["item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__format__"]


def count_host_reads(monkeypatch) -> Counter:
    """Wrap each host read of torch.Tensor with a counter (the real function still runs)."""
    counts = Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("objective", ["hybrid", "vlb"])  # vlb: the resampler learns from every step's losses
def test_training_steps_read_nothing_back_to_the_host(tmp_path: Path, monkeypatch, objective: str) -> None:
    flags = ["--loss", objective, "--variance_type", "learned_range", "--max_grad_norm", "1.0"]
    args, c, batches = build_step(tmp_path, *flags)
    meter = LossMeter(args.ddpm_num_steps)
    train_step(c, next(batches), 0)  # first step: lazily built state (scheduler terms on the device)
    counts = count_host_reads(monkeypatch)
    for step in range(1, 7):
        images = next(batches)
        timesteps, terms = train_step(c, images, step)
        meter.add(terms, timesteps)
    assert counts == Counter()  # the step, the NaN check, the resampler and the loss sums: no host read
    averages = meter.averages(prefix="train/")  # the log line reads them, once
    assert set(counts) == {"tolist"} and counts["tolist"] == 1
    assert averages["train/loss"] > 0 and c.nonfinite.first_bad_step.item() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_steps_never_synchronize_on_cuda(tmp_path: Path) -> None:
    args, c, batches = build_step(tmp_path, "--loss", "vlb", "--variance_type", "learned_range", "--device", "cuda")
    meter = LossMeter(args.ddpm_num_steps)
    batch = [next(batches) for _ in range(6)]  # loaded (and copied to the device) before the check
    train_step(c, batch[0], 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
    try:
        for step in range(1, 6):
            timesteps, terms = train_step(c, batch[step], step)
            meter.add(terms, timesteps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert meter.averages()["loss"] > 0
