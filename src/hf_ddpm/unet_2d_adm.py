# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`UNet2DModel` with the two freedoms of openai's ADM UNet (improved-diffusion, guided-diffusion) that it lacks.

The original's `num_heads` is a head *count*: where attention layers differ in width (improved-diffusion's
ImageNet-64: 4 heads at 384 and 512 channels; guided-diffusion's 128x128: 4 heads at 512, 768 and 1024) the head
size differs per level, and `UNet2DModel` has one `attention_head_dim`. guided-diffusion's 512x512 model starts at
half its `model_channels` (`channel_mult` 0.5, ...) but embeds time with `model_channels` sinusoids, and
`UNet2DModel`'s are as many as its first level's channels. One config field for each; every weight keeps its
`UNet2DModel` name and shape.

This module imports only diffusers on purpose: like the scheduler's, it travels as remote code next to the UNet's
`config.json`, for loading where hf_ddpm is not installed.
"""

from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d import UNet2DModel

MODULE_FILE = "unet_2d_adm.py"


class ADMUNet2DModel(UNet2DModel):
    """
    [`UNet2DModel`] plus, as in openai's ADM UNet, a fixed number of heads in every attention layer and a time
    embedding whose sinusoids may be wider than the first level.

    Args:
        num_attention_heads (`int`, *optional*):
            The number of heads of every attention layer, whatever its width (the original's `num_heads`); the head
            size is the layer's channels divided by it. `None` keeps `attention_head_dim`.
        timestep_input_dim (`int`, *optional*):
            The number of sinusoids of the time embedding (the original's `model_channels`); `None` keeps
            `block_out_channels[0]`.
        The other arguments are [`UNet2DModel`]'s.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        mid_block_type: str | None = "UNetMidBlock2D",
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels: tuple[int, ...] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        num_train_timesteps: int | None = None,
        num_attention_heads: int | None = None,
        timestep_input_dim: int | None = None,
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            center_input_sample=center_input_sample,
            time_embedding_type=time_embedding_type,
            time_embedding_dim=time_embedding_dim,
            freq_shift=freq_shift,
            flip_sin_to_cos=flip_sin_to_cos,
            down_block_types=down_block_types,
            mid_block_type=mid_block_type,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            mid_block_scale_factor=mid_block_scale_factor,
            downsample_padding=downsample_padding,
            downsample_type=downsample_type,
            upsample_type=upsample_type,
            dropout=dropout,
            act_fn=act_fn,
            # one head per layer, as wide as the layer: the head count is set below
            attention_head_dim=None if num_attention_heads else attention_head_dim,
            norm_num_groups=norm_num_groups,
            attn_norm_num_groups=attn_norm_num_groups,
            norm_eps=norm_eps,
            resnet_time_scale_shift=resnet_time_scale_shift,
            add_attention=add_attention,
            class_embed_type=class_embed_type,
            num_class_embeds=num_class_embeds,
            num_train_timesteps=num_train_timesteps,
        )
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
            self.time_proj = Timesteps(timestep_input_dim, flip_sin_to_cos, freq_shift)
            self.time_embedding = TimestepEmbedding(timestep_input_dim, self.time_embedding.linear_1.out_features)
