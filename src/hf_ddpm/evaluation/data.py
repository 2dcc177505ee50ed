# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The images `eval` and `analytic` read, as uint8 [N x H x W x C], and their flags: scikit-learn's digits (the fixed
split of `hf_ddpm._digits`), a `datasets` dataset or a folder of images, each image decoded as training decodes it."""

import os

import numpy as np

from .._choices import int_range
from .._datasets import decode_image, find_image_column, open_dataset
from .._digits import DIGITS_SPLITS, load_digits
from .._errors import UsageError


def add_dataset_arguments(group, split_default: str, split_help: str) -> None:
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", choices=("digits",), default="digits", help="a built-in dataset (default: digits)"
    )
    source.add_argument("--train_data_dir", help="a local folder of images instead of --dataset")
    source.add_argument("--dataset_name", help="a `datasets` dataset (Hub id or local folder)")
    group.add_argument("--split", default=split_default, help=split_help)
    group.add_argument("--max_images", type=int_range(2), help="use only the first N >= 2 images of the split")


def uses_digits(args) -> bool:
    """Whether the dataset flags name the built-in digits; refuses a split they do not have (`UsageError`)."""
    digits = args.train_data_dir is None and args.dataset_name is None
    if digits and args.split not in DIGITS_SPLITS:
        raise UsageError(f"--split for --dataset digits must be one of {', '.join(map(repr, DIGITS_SPLITS))}.")
    return digits


def describe_dataset(args) -> dict:
    """The dataset flags as results record them: the folder, or the dataset and its split."""
    if args.train_data_dir is not None:
        return {"dataset": os.path.abspath(args.train_data_dir)}
    return {"dataset": args.dataset_name or args.dataset, "split": args.split}


def is_digits_model(config) -> bool:
    """Whether a UNet config makes 8x8 grayscale images, the only ones the digits fit."""
    size = config.sample_size if isinstance(config.sample_size, int) else tuple(config.sample_size)
    return config.in_channels == 1 and size in (8, (8, 8))


def load_dataset_images(args, unet_config) -> np.ndarray:
    """The images of the dataset flags, checked against the model's channels and size."""
    if not uses_digits(args):
        folder = args.train_data_dir
        size = unet_config.sample_size if isinstance(unet_config.sample_size, int) else None
        channels = unet_config.in_channels
        images = load_images(folder or args.dataset_name, channels, args.split, size, image_folder=folder is not None)
    elif is_digits_model(unet_config):
        images = load_digits(args.split)[0]
    else:
        raise UsageError(
            f"--dataset digits holds 8x8 grayscale images, but this model makes {unet_config.in_channels}-channel"
            f" {unet_config.sample_size} images; pass --train_data_dir or --dataset_name."
        )
    return images[: args.max_images]


def load_images(
    name: str, channels: int, split: str = "test", resolution: int | None = None, image_folder: bool = False
) -> np.ndarray:
    """
    The images of `split` of a `datasets` dataset (a Hub id or a local folder), or of every image of the folder `name`
    with `image_folder` (as training reads --train_data_dir), as uint8 [N x H x W x `channels`]: decoded as training
    decodes them, not resized (a side other than `resolution` is refused).
    """
    if image_folder:
        if not os.path.isdir(name):
            raise FileNotFoundError(f"--train_data_dir {name} is not a folder.")
        import datasets

        dataset = datasets.concatenate_datasets(list(open_dataset(None, data_dir=name).values()))
    else:
        splits = open_dataset(name)
        if split not in splits:
            raise UsageError(f"--split {split!r} is not a split of {name}; it has: {', '.join(splits)}.")
        dataset = splits[split]
    images = np.stack([decode_image(image, channels) for image in dataset[find_image_column(dataset)]])
    if resolution is not None and images.shape[1:3] != (resolution, resolution):
        height, width = images.shape[1:3]
        raise ValueError(f"The images of {name} are {height}x{width}, but the model makes {resolution}x{resolution}.")
    return images
