# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`hf-ddpm convert`: openai/improved-diffusion and openai/guided-diffusion checkpoints as pipeline folders.

The UNet becomes diffusers' `UNet2DModel` (`ADMUNet2DModel` where the original's head count or time embedding needs
it), the diffusion our scheduler's config. The flags are the originals' own, with their defaults, so that
`MODEL_FLAGS` and `DIFFUSION_FLAGS` paste from the page the checkpoint came from.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import pickle
import re
from typing import TYPE_CHECKING

from ._choices import checked
from ._errors import UsageError, one_line
from .files import atomic_write_text, check_output_dir

if TYPE_CHECKING:  # torch and diffusers are imported where used: `hf-ddpm --help` needs none
    from diffusers import UNet2DModel

# flag: (help, improved-diffusion's default, guided-diffusion's default; None where the source has no such flag).
# The defaults are model_and_diffusion_defaults() of each script_util.py (commits 1bc7bbb and 22e0df8).
FLAGS = {
    "image_size": ("height and width in pixels; picks the default channel_mult", 64, 64),
    "num_channels": ("channels of the first level (model_channels)", 128, 128),
    "num_res_blocks": ("residual blocks per level", 2, 2),
    "num_heads": ("attention heads per layer, unless num_head_channels is set", 4, 4),
    "num_heads_upsample": ("decoder attention heads; -1: num_heads", -1, -1),
    "num_head_channels": ("channels per attention head; -1: use num_heads", None, -1),
    "attention_resolutions": ("comma-separated resolutions with self-attention", "16,8", "16,8"),
    "channel_mult": ("comma-separated channel multipliers per level; empty: by image_size", None, ""),
    "dropout": ("dropout rate (for fine-tuning)", 0.0, 0.0),
    "learn_sigma": ("the model outputs its variances (learned_range)", False, False),
    "sigma_small": ("fixed variance beta-tilde instead of beta", False, None),
    "class_cond": ("class-conditional on ImageNet's 1000 classes", False, False),
    "diffusion_steps": ("T, the number of diffusion steps", 1000, 1000),
    "noise_schedule": ("the beta schedule: linear or cosine", "linear", "linear"),
    "timestep_respacing": ("the original's sampling steps (recorded only)", "", ""),
    "use_kl": ("trained on L_vlb (recorded only)", False, False),
    "predict_xstart": ("the model predicts x_0 instead of the noise", False, False),
    "rescale_timesteps": ("the model saw t * 1000 / T", True, False),
    "rescale_learned_sigmas": ("a training loss weight (recorded only)", True, False),
    "use_checkpoint": ("gradient checkpointing (recorded only)", False, False),
    "use_scale_shift_norm": ("time embedding as scale and shift of the GroupNorm", True, True),
    "resblock_updown": ("residual blocks for up- and downsampling", None, False),
    "use_fp16": ("the original ran in float16 (recorded only: the weights become float32)", None, False),
    "use_new_attention_order": ("q, k, v split before the heads, not after (legacy)", None, False),
}
SOURCES = {
    "improved-diffusion": {
        "column": 1,
        "channel_mult": {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)},
        "repository": "https://github.com/openai/improved-diffusion",
        "paper": "Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021)",
        "paper_url": "https://arxiv.org/abs/2102.09672",
    },
    "guided-diffusion": {
        "column": 2,
        "channel_mult": {
            512: (0.5, 1, 1, 2, 2, 4, 4),
            256: (1, 1, 2, 2, 4, 4),
            128: (1, 1, 2, 3, 4),
            64: (1, 2, 3, 4),
        },
        "repository": "https://github.com/openai/guided-diffusion",
        "paper": "Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021)",
        "paper_url": "https://arxiv.org/abs/2105.05233",
    },
}
LICENSE = "MIT"  # both repositories, code and released checkpoints
NUM_CLASSES = 1000  # the originals' class-conditional models are ImageNet's
# checkpoints of the same repositories that are not image diffusion models, by a part of their file name
REFUSED_BY_NAME = {
    "upsampl": "a super-resolution model (it takes a low-resolution image as extra input channels)",
    "_classifier.pt": "a noise-aware classifier for guidance, not a diffusion model",
}
# the original's submodules of a residual block and of an attention block, by diffusers' names
RESNET_MODULES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
ATTENTION_MODULES = {"group_norm": "norm", "to_q": "qkv", "to_k": "qkv", "to_v": "qkv", "to_out.0": "proj_out"}
QKV_PARTS = {"to_q": 0, "to_k": 1, "to_v": 2}
# (a pattern of the first key that differs from the flags' model, the flag most likely wrong)
SUSPECTS = [
    (r"^label_emb\.", "--class_cond"),
    (r"^(time_embed|input_blocks\.0)\.", "--num_channels"),
    (r"^out\.2\.", "--learn_sigma"),
    (r"\.emb_layers\.", "--use_scale_shift_norm"),
    (r"\.(norm|qkv|proj_out)\.", "--attention_resolutions or --image_size"),
]

EXAMPLE = """Example:
  hf-ddpm convert improved-diffusion cifar10_uncond_50M_500K.pt --output_dir iddpm-cifar10 \\
      --image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3 \\
      --diffusion_steps 4000 --noise_schedule cosine
  hf-ddpm convert guided-diffusion 256x256_diffusion_uncond.pt --output_dir adm-256-uncond $MODEL_FLAGS
"""


def resolve_flags(source: str, **flags) -> dict:
    """The original's defaults for `source`, updated with `flags` (the original's names, e.g. `class_cond`)."""
    column = SOURCES[source]["column"]
    defaults = {name: row[column] for name, row in FLAGS.items() if row[column] is not None}
    unknown = sorted(set(flags) - set(defaults))
    if unknown:
        raise UsageError(f"{source} has no flag --{unknown[0]}; its flags: {', '.join(defaults)}.")
    return {**defaults, **flags}


def levels(source: str, flags: dict) -> tuple[list[int], list[bool]]:
    """The channels of each level of the original UNet, and whether the level has attention."""
    if flags.get("channel_mult"):
        channel_mult = _integers("channel_mult", flags["channel_mult"])
    elif flags["image_size"] in SOURCES[source]["channel_mult"]:
        channel_mult = SOURCES[source]["channel_mult"][flags["image_size"]]
    else:
        sizes = ", ".join(map(str, SOURCES[source]["channel_mult"]))
        raise UsageError(f"--image_size must be one of {sizes} for {source}, got {flags['image_size']}.")
    resolutions = _integers("attention_resolutions", flags["attention_resolutions"])
    # the original attends at the downsampling factors image_size / resolution
    attention_factors = {flags["image_size"] // resolution for resolution in resolutions}
    attention = [2**level in attention_factors for level in range(len(channel_mult))]
    return [int(mult * flags["num_channels"]) for mult in channel_mult], attention


def _integers(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise UsageError(f"--{flag} must be comma-separated positive integers, got {text!r}.")
    return values


def unet_config(source: str, flags: dict) -> tuple[str, dict]:
    """The class name (`UNet2DModel` or `ADMUNet2DModel`) and config of the UNet that computes the original's."""
    channels, attention = levels(source, flags)
    updown = flags.get("resblock_updown", False)
    down, up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if updown else ("DownBlock2D", "UpBlock2D")
    config = {
        "sample_size": flags["image_size"],
        "in_channels": 3,
        "out_channels": 6 if flags["learn_sigma"] else 3,
        "block_out_channels": channels,
        "layers_per_block": flags["num_res_blocks"],
        "down_block_types": ["AttnDownBlock2D" if a else down for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else up for a in attention[::-1]],
        "downsample_type": "resnet" if updown else "conv",
        "upsample_type": "resnet" if updown else "conv",
        "resnet_time_scale_shift": "scale_shift" if flags["use_scale_shift_norm"] else "default",
        "attn_norm_num_groups": 32,  # else UNet2DModel's middle attention has no GroupNorm under scale-shift
        "dropout": flags["dropout"],
        "num_class_embeds": NUM_CLASSES if flags["class_cond"] else None,
        "time_embedding_dim": 4 * flags["num_channels"],
        "flip_sin_to_cos": True,  # the original's sinusoid is [cos, sin] at frequencies 10000^(-i / half)
        "freq_shift": 0,
    }
    head_channels = flags.get("num_head_channels", -1)
    if head_channels == -1 and flags["num_heads_upsample"] not in (-1, flags["num_heads"]):
        raise UsageError("--num_heads_upsample must be -1 or --num_heads: no released model has other decoder heads.")
    widths = {width for width, a in zip(channels, attention, strict=True) if a} | {channels[-1]}
    divisor = flags["num_heads"] if head_channels == -1 else head_channels
    if any(width % divisor for width in widths):
        flag = "--num_heads" if head_channels == -1 else "--num_head_channels"
        raise UsageError(f"{flag} {divisor} does not divide the attention layers' channels {sorted(widths)}.")
    extra = {}
    if head_channels != -1:
        config["attention_head_dim"] = head_channels
    elif flags["num_heads"] == 1:
        config["attention_head_dim"] = None  # UNet2DModel: one head as wide as each layer
    elif len(widths) == 1:
        config["attention_head_dim"] = widths.pop() // flags["num_heads"]
    else:  # a head count over layers of different widths: a different head size per level
        extra["num_attention_heads"] = flags["num_heads"]
    if channels[0] != flags["num_channels"]:  # a narrower first level: the sinusoids stay num_channels wide
        extra["timestep_input_dim"] = flags["num_channels"]
    return ("ADMUNet2DModel" if extra else "UNet2DModel"), {**config, **extra}


def build_unet(source: str, flags: dict) -> UNet2DModel:
    """The UNet the flags describe, with fresh weights."""
    class_name, config = unet_config(source, flags)
    module = importlib.import_module("hf_ddpm.unet_2d_adm" if class_name == "ADMUNet2DModel" else "diffusers")
    return getattr(module, class_name)(**config)


def module_map(source: str, flags: dict) -> dict[str, str]:
    """diffusers' module names -> the original's, walking both UNets' blocks in the original's order."""
    names = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "class_embedding": "label_emb",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }

    def add(target: str, original: str, submodules: dict[str, str]) -> None:
        names.update({f"{target}.{t}": f"{original}.{o}" for t, o in submodules.items()})

    def add_sampler(target: str, original: str, conv_name: str) -> None:
        add(target, original, RESNET_MODULES if flags.get("resblock_updown") else {"conv": conv_name})

    channels, attention = levels(source, flags)
    index = 1  # input_blocks.0 is conv_in
    for level in range(len(channels)):
        for layer in range(flags["num_res_blocks"]):
            add(f"down_blocks.{level}.resnets.{layer}", f"input_blocks.{index}.0", RESNET_MODULES)
            if attention[level]:
                add(f"down_blocks.{level}.attentions.{layer}", f"input_blocks.{index}.1", ATTENTION_MODULES)
            index += 1
        if level < len(channels) - 1:
            add_sampler(f"down_blocks.{level}.downsamplers.0", f"input_blocks.{index}.0", "op")
            index += 1
    add("mid_block.resnets.0", "middle_block.0", RESNET_MODULES)
    add("mid_block.attentions.0", "middle_block.1", ATTENTION_MODULES)
    add("mid_block.resnets.1", "middle_block.2", RESNET_MODULES)
    index = 0
    for block, level in enumerate(reversed(range(len(channels)))):
        for layer in range(flags["num_res_blocks"] + 1):
            add(f"up_blocks.{block}.resnets.{layer}", f"output_blocks.{index}.0", RESNET_MODULES)
            if attention[level]:
                add(f"up_blocks.{block}.attentions.{layer}", f"output_blocks.{index}.1", ATTENTION_MODULES)
            index += 1
        if level > 0:  # the sampler closes the level's last output block
            sampler = f"output_blocks.{index - 1}.{2 if attention[level] else 1}"
            add_sampler(f"up_blocks.{block}.upsamplers.0", sampler, "conv")
    return names


def original_keys(unet: UNet2DModel, source: str, flags: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """For each parameter of `unet`: the original's key and its shape there ([3C x C x 1] for the fused qkv)."""
    names = module_map(source, flags)
    keys = {}
    for key, parameter in unet.state_dict().items():
        module, _, name = key.rpartition(".")
        shape = tuple(parameter.shape)
        if module.rpartition(".")[2] in QKV_PARTS:
            shape = (3 * shape[0], *shape[1:])
        if re.search(r"attentions\.\d+\.(to_[qkv]|to_out\.0)$", module) and name == "weight":
            shape = (*shape, 1)  # the original's 1x1 Conv1d
        keys[key] = (f"{names[module]}.{name}", shape)
    return keys


def convert_unet(state_dict: dict, source: str, flags: dict, name: str = "the checkpoint") -> UNet2DModel:
    """
    The original's `state_dict` as the UNet the flags describe, checked key by key and shape by shape.

    The fused qkv projection splits into to_q, to_k, to_v: its 3C rows are [head][q, k, v][channel] in the legacy
    order (QKVAttentionLegacy, all of improved-diffusion) and [q, k, v][head][channel] in the new order, while
    diffusers' heads are consecutive rows of each of to_q, to_k, to_v.
    """
    import torch

    unet = build_unet(source, flags)
    keys = original_keys(unet, source, flags)
    check_keys(state_dict, dict(keys.values()), source, name)
    for key, tensor in state_dict.items():  # after check_keys: every tensor has the model's size
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UsageError(f"{name} is damaged: {key} holds NaN or infinite values.")
    legacy_order = not flags.get("use_new_attention_order", False)
    converted = {}
    for key, parameter in unet.state_dict().items():
        tensor = state_dict[keys[key][0]].to(torch.float32)
        part = QKV_PARTS.get(key.rpartition(".")[0].rpartition(".")[2])
        if part is not None:
            channels = tensor.shape[0] // 3
            head_channels = flags.get("num_head_channels", -1)
            head_count = flags["num_heads"] if head_channels == -1 else channels // head_channels
            if legacy_order:
                tensor = tensor.reshape(head_count, 3, channels // head_count, -1)[:, part]
            else:
                tensor = tensor.reshape(3, channels, -1)[part]
        converted[key] = tensor.reshape(parameter.shape)
    unet.load_state_dict(converted, strict=True)
    return unet.eval()


def check_keys(state_dict: dict, expected: dict[str, tuple[int, ...]], source: str, name: str) -> None:
    """Refuse, in one line, a checkpoint whose keys or shapes differ from those the flags give."""
    problems = [(key, "is not in the model the flags describe") for key in state_dict if key not in expected]
    problems += [(key, "is missing from the checkpoint") for key in expected if key not in state_dict]
    for key in expected:
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]:
            shape = list(state_dict[key].shape)
            problems.append((key, f"has shape {shape} where the flags give {list(expected[key])}"))
    if problems:
        key, problem = problems[0]
        flag = suspect_flag(key, state_dict, expected, source)
        raise UsageError(f"{name} does not match the flags: {key} {problem}; check {flag}.")


def suspect_flag(key: str, state_dict: dict, expected: dict, source: str) -> str:
    """The flag most likely wrong when `key` is the first key that differs."""
    if any(".op." in k for k in state_dict) != any(".op." in k for k in expected):
        # a Downsample's conv ("op") in one and a residual block in the other; improved-diffusion has no such flag
        guided = "the source: a guided-diffusion checkpoint? (hf-ddpm convert guided-diffusion)"
        return "--resblock_updown" if source == "guided-diffusion" else guided
    for pattern, flag in SUSPECTS:
        if re.search(pattern, key):
            return flag
    levels = "--num_res_blocks, --attention_resolutions or --image_size"
    return levels + (" or --channel_mult" if source == "guided-diffusion" else "")


def scheduler_config(flags: dict) -> dict:
    """Our scheduler's config for the original's diffusion: its betas, variances and prediction."""
    steps = flags["diffusion_steps"]
    if flags["noise_schedule"] == "linear":
        scale = 1000 / steps  # Ho et al.'s betas stretched to T steps, as the original's get_named_beta_schedule
        betas = {"beta_schedule": "linear", "beta_start": scale * 0.0001, "beta_end": scale * 0.02}
    else:  # cosine: alpha_bar(t) = cos^2((t / T + 0.008) / 1.008 pi / 2), betas capped at 0.999
        betas = {"beta_schedule": "squaredcos_cap_v2"}
    fixed = "fixed_small" if flags.get("sigma_small") else "fixed_large"
    return {
        "num_train_timesteps": steps,
        **betas,
        "variance_type": "learned_range" if flags["learn_sigma"] else fixed,
        "prediction_type": "sample" if flags["predict_xstart"] else "epsilon",
        "clip_sample": True,  # the originals' samplers clip x_0 (clip_denoised=True)
        "timestep_spacing": "linspace",  # the originals' respacing "N": N evenly spaced steps, ends included
    }


def load_checkpoint(path: str) -> dict:
    """The state dict in a .pt file, loaded with `weights_only=True`: no pickled code runs."""
    import torch

    name = os.path.basename(path)
    for part, what in REFUSED_BY_NAME.items():
        if part in name.lower():
            raise UsageError(f"{name} is {what}; hf-ddpm converts the originals' image diffusion models only.")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message goes on to advise weights_only=False: never here
        raise UsageError(f"{name} holds pickled objects other than tensors, which could run code: refused.") from None
    except Exception as error:  # not a zip, truncated...
        raise UsageError(f"{name} is not a PyTorch checkpoint ({one_line(error)}).") from None
    is_tensors = isinstance(state_dict, dict) and all(isinstance(v, torch.Tensor) for v in state_dict.values())
    if not (is_tensors and all(isinstance(key, str) for key in state_dict)):
        raise UsageError(f"{name} is not a model state dict (a dict of tensors); an optimizer checkpoint (opt*.pt)?")
    if state_dict and all(key.startswith("module.") for key in state_dict):  # saved from DistributedDataParallel
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    first_conv = state_dict.get("input_blocks.0.0.weight")
    if first_conv is not None and first_conv.ndim == 4 and first_conv.shape[1] == 6:
        raise UsageError(f"{name} is {REFUSED_BY_NAME['upsampl']}; hf-ddpm converts image diffusion models only.")
    return state_dict


def convert(source: str, checkpoint: str, output_dir: str, flags: dict) -> str:
    """Convert `checkpoint` into the pipeline folder `output_dir` (new or empty): written whole, or not at all."""
    from .pipeline_ddpm_posterior import DDPMPosteriorPipeline
    from .scheduling_ddpm_posterior import DDPMPosteriorScheduler

    check_output_dir(output_dir, inputs=[checkpoint])
    if os.path.islink(output_dir) or (
        os.path.exists(output_dir) and not (os.path.isdir(output_dir) and not os.listdir(output_dir))
    ):
        raise UsageError(f"--output_dir {output_dir} exists and is not an empty folder; choose a new one.")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"{checkpoint} is not a file." if os.path.exists(checkpoint) else f"{checkpoint} does not exist."
        )
    flags = resolve_flags(source, **flags)
    unet = convert_unet(load_checkpoint(checkpoint), source, flags, name=os.path.basename(checkpoint))
    scheduler = DDPMPosteriorScheduler(**scheduler_config(flags))
    # the original's UNet saw t * 1000 / T (rescale_timesteps)
    timestep_scale = 1000 / flags["diffusion_steps"] if flags["rescale_timesteps"] else 1.0
    pipeline = DDPMPosteriorPipeline(unet=unet, scheduler=scheduler, timestep_scale=timestep_scale)
    with open(checkpoint, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    record = {
        "source": source,
        **{key: SOURCES[source][key] for key in ("repository", "paper", "paper_url")},
        "license": LICENSE,
        "checkpoint": os.path.basename(checkpoint),
        "sha256": sha256,
        "flags": flags,
    }
    try:  # save_pretrained stages the files and moves them in: a failed save leaves the folder as it was
        pipeline.save_pretrained(output_dir)
        atomic_write_text(os.path.join(output_dir, "conversion.json"), json.dumps(record, indent=2) + "\n")
    except OSError as error:  # a parent that is a file, a read-only place...
        raise UsageError(f"--output_dir {output_dir} cannot be written: {error.strerror}.") from None
    return output_dir


POSITIVE = checked(int, "a positive integer", lambda value: value >= 1)
POSITIVE_OR_UNSET = checked(int, "a positive integer or -1", lambda value: value >= 1 or value == -1)
RATE = checked(float, "a number in [0, 1)", lambda value: 0 <= value < 1)  # NaN too


BOOLEANS = {"yes": True, "true": True, "t": True, "y": True, "1": True}  # the originals' str2bool
BOOLEANS |= {"no": False, "false": False, "f": False, "n": False, "0": False}
BOOLEAN = checked(lambda text: BOOLEANS.get(text.lower()), "True or False", lambda value: value is not None)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an openai improved-diffusion or guided-diffusion checkpoint",
        description="Convert a released checkpoint of openai/improved-diffusion or openai/guided-diffusion into a"
        " pipeline folder. Pass the MODEL_FLAGS and DIFFUSION_FLAGS that the original's README gives for it.",
        epilog=EXAMPLE,
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for source, spec in SOURCES.items():
        flags = sources.add_parser(source, help=f"a checkpoint of {spec['repository']}", epilog=EXAMPLE)
        flags.add_argument("checkpoint", help="the .pt file (EMA or not)")
        flags.add_argument("--output_dir", required=True, help="the pipeline folder to write (new or empty)")
        for flag, default in resolve_flags(source).items():
            kinds = {bool: BOOLEAN, int: POSITIVE_OR_UNSET if default == -1 else POSITIVE, float: RATE}
            kind = kinds.get(type(default), str)
            choices = ("linear", "cosine") if flag == "noise_schedule" else None
            help_text = f"{FLAGS[flag][0]} (default {default!r})"
            flags.add_argument(f"--{flag}", type=kind, default=default, choices=choices, help=help_text)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    flags = {flag: getattr(args, flag) for flag in resolve_flags(args.source)}
    print(convert(args.source, args.checkpoint, args.output_dir, flags))
