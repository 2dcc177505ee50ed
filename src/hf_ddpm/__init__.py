"""hf_ddpm: DDPM and Improved DDPM as first-class Hugging Face diffusers components."""

from .pipeline_ddpm_posterior import BitsPerDimOutput, DDPMPosteriorPipeline, DDPMPosteriorPipelineOutput
from .scheduling_ddpm_posterior import DDPMPosteriorScheduler

__all__ = ["BitsPerDimOutput", "DDPMPosteriorPipeline", "DDPMPosteriorPipelineOutput", "DDPMPosteriorScheduler"]
__version__ = "0.1.0"
