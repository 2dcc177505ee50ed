# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`UNet2DModel` with the two freedoms of openai's ADM UNet that it lacks. It imports only diffusers: it travels as
remote code beside the UNet's `config.json`.
"""

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d import UNet2DModel


class ADMUNet2DModel(UNet2DModel):
    """
    [`UNet2DModel`] with, as in openai's ADM UNet (improved-diffusion, guided-diffusion), a head *count* for every
    attention layer (improved-diffusion's ImageNet-64 has 4 heads at 384 and 512 channels, where `UNet2DModel` has one
    head size) and time sinusoids wider than the first level (guided-diffusion's 512x512 starts at half its
    `model_channels`). Every weight keeps its `UNet2DModel` name and shape.

    Args:
        num_attention_heads (`int`, *optional*): the heads of every attention layer, whatever its width; `None` keeps
            `attention_head_dim`.
        timestep_input_dim (`int`, *optional*): the number of time sinusoids; `None` keeps `block_out_channels[0]`.
        kwargs: [`UNet2DModel`]'s arguments.
    """

    @register_to_config
    def __init__(self, num_attention_heads: int | None = None, timestep_input_dim: int | None = None, **kwargs):
        if num_attention_heads:  # one head per layer, as wide as the layer: the head count is set below
            kwargs["attention_head_dim"] = None
        super().__init__(**kwargs)
        if num_attention_heads:
            for attention in self.modules():
                if isinstance(attention, Attention):
                    if attention.inner_dim % num_attention_heads:
                        raise ValueError(
                            f"`num_attention_heads` {num_attention_heads} does not divide an attention layer's"
                            f" {attention.inner_dim} channels."
                        )
                    attention.heads = attention.sliceable_head_dim = num_attention_heads
                    attention.scale = (attention.inner_dim // num_attention_heads) ** -0.5
        if timestep_input_dim:
            self.time_proj = Timesteps(timestep_input_dim, self.config.flip_sin_to_cos, self.config.freq_shift)
            self.time_embedding = TimestepEmbedding(timestep_input_dim, self.time_embedding.linear_1.out_features)

    @staticmethod
    def _get_init_keys(input_class):
        """The config keys `from_config` passes to `__init__`: ours and, through `**kwargs`, `UNet2DModel`'s."""
        keys = ConfigMixin._get_init_keys(input_class)
        return keys | ConfigMixin._get_init_keys(UNet2DModel) if issubclass(input_class, ADMUNet2DModel) else keys
