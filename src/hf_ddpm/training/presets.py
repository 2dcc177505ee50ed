# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Model presets: a UNet2DModel architecture and the defaults of the flags a user leaves unset (`None` in args.py)."""

from typing import Any

# The small default: 8x8 single-channel digits on a laptop CPU, where the convolutions are nearly the whole cost. Two
# resolutions (8x8, 4x4), 32 and 64 channels, one res block each, 0.65M parameters. In 6-minute CPU runs scored with
# fd-digits it beat self-attention at 4x4 (10.5 vs 9.2 at equal steps, and 10% slower), wider (48, 96) channels
# (20.5 at equal time) and a third resolution (15.4); see the report of issue 3.
DIGITS_UNET = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}

# Ho et al. 2020, appendix B: ch 128, multipliers (1, 2, 2, 2), 2 res blocks per resolution, self-attention at
# 16x16, dropout 0.1; 35.7M parameters. Same layout as google/ddpm-cifar10-32.
CIFAR10_UNET = {
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None,  # one head, as in the paper
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "dropout": 0.1,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
}

# 64x64 (Nichol & Dhariwal's ImageNet-64 layout, lighter): ch 128, multipliers (1, 2, 3, 4), 2 res blocks,
# self-attention at 16x16 and 8x8, dropout 0.1.
UNET_64 = {
    "block_out_channels": (128, 256, 384, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "attention_head_dim": 64,
    "norm_num_groups": 32,
    "dropout": 0.1,
}

# The digits layout, a few thousand parameters: smoke tests and CI, where only the plumbing matters.
TINY_UNET = {**DIGITS_UNET, "block_out_channels": (8, 16), "norm_num_groups": 4}

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "unet": DIGITS_UNET,
        "defaults": {
            "resolution": 8,
            "channels": 1,
            # at a fixed compute budget, batch 64 beat 32 and 128, and lr 2e-3 beat 1e-3 (measured, see report)
            "train_batch_size": 64,
            "learning_rate": 2e-3,
            "lr_warmup_steps": 100,
            # ~7 min of training at ~6 steps/s (python train.py, 2 threads), ~11 min with `accelerate launch`,
            # which sets OMP_NUM_THREADS=1 (~3.6 steps/s); plus ~1 min of loading, sample grids and bits/dim
            "max_train_steps": 2500,
            "ema_decay": 0.999,
            "checkpointing_steps": 500,
            "save_images_steps": 500,
            "bpd_steps": 1000,
        },
    },
    "tiny": {
        "unet": TINY_UNET,
        "defaults": {
            "resolution": 8,
            "channels": 1,
            "train_batch_size": 16,
            "learning_rate": 1e-3,
            "lr_warmup_steps": 0,
            "max_train_steps": 20,
            "ema_decay": 0.99,
            "checkpointing_steps": 10,
            "save_images_steps": 0,
            "bpd_steps": 0,
        },
    },
    "cifar10": {
        "unet": CIFAR10_UNET,
        "defaults": {
            "resolution": 32,
            "channels": 3,
            "train_batch_size": 128,
            "learning_rate": 2e-4,
            "lr_warmup_steps": 5000,
            "max_train_steps": 800_000,
            "ema_decay": 0.9999,
            "checkpointing_steps": 10_000,
            "save_images_steps": 10_000,
            "bpd_steps": 10_000,
        },
    },
    "64": {
        "unet": UNET_64,
        "defaults": {
            "resolution": 64,
            "channels": 3,
            "train_batch_size": 64,
            "learning_rate": 1e-4,
            "lr_warmup_steps": 5000,
            "max_train_steps": 500_000,
            "ema_decay": 0.9999,
            "checkpointing_steps": 10_000,
            "save_images_steps": 10_000,
            "bpd_steps": 10_000,
        },
    },
}


def unet_config(preset: str, resolution: int, channels: int, learned_variance: bool) -> dict[str, Any]:
    """The `UNet2DModel` config of `preset` for R x R images; a learned variance doubles the output channels."""
    return {
        "sample_size": resolution,
        "in_channels": channels,
        "out_channels": 2 * channels if learned_variance else channels,
        **MODEL_PRESETS[preset]["unet"],
    }
