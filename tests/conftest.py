"""Shared pytest fixtures. The local Hub-compatible server's fixtures live in conftest_hub.py."""

import pytest
import torch
from diffusers import UNet2DModel

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler

pytest_plugins = ["conftest_hub"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """
    One torch thread for a module's tests: tiny UNets gain nothing from a second thread, and on a shared 2-core
    machine a second OpenMP thread only spins (2 s per step instead of 30 ms). Use it with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate_state():
    """Each in-process training run builds its own Accelerator; accelerate keeps its state in process-wide singletons.
    Use it with `pytest.mark.usefixtures("fresh_accelerate_state")`."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ~10k parameters: two resolutions of 8 and 16 channels (with sample_size, in_channels and out_channels)
TINY_UNET = dict(
    block_out_channels=(8, 16),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
)


def make_tiny_unet(in_channels: int = 1, learned_variance: bool = False, sample_size: int = 8, seed: int = 0):
    """A UNet2DModel small enough for CPU tests (~10k parameters), deterministic for a seed."""
    torch.manual_seed(seed)
    out_channels = in_channels * (2 if learned_variance else 1)
    return UNet2DModel(**TINY_UNET, sample_size=sample_size, in_channels=in_channels, out_channels=out_channels)


@pytest.fixture
def tiny_pipeline() -> DDPMPosteriorPipeline:
    """A random-weight 8x8 grayscale pipeline with T=50."""
    return DDPMPosteriorPipeline(unet=make_tiny_unet(), scheduler=DDPMPosteriorScheduler(num_train_timesteps=50))
