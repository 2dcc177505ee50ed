"""hf_ddpm: DDPM and Improved DDPM as first-class Hugging Face diffusers components."""

import importlib

# Public names and their modules, imported on first use (PEP 562): `hf-ddpm --help` imports this package and must
# not pay for torch and diffusers.
_EXPORTS = {
    "BitsPerDimOutput": "pipeline_ddpm_posterior",
    "DDPMPosteriorPipeline": "pipeline_ddpm_posterior",
    "DDPMPosteriorPipelineOutput": "pipeline_ddpm_posterior",
    "DDPMPosteriorScheduler": "scheduling_ddpm_posterior",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
