"""hf_ddpm: DDPM and Improved DDPM as first-class Hugging Face diffusers components."""

from ._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
