# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The images that evaluation compares against: scikit-learn's digits, or a `datasets` dataset read as training
reads it (a Hub id, a local dataset, or a folder of images through the `imagefolder` builder).

Every loader returns uint8 arrays [N x H x W x C], the format `DDPMPosteriorPipeline.bits_per_dim` and the feature
extractors take. The digits and their fixed split live in `hf_ddpm._digits` (shared with training).
"""

import os

import numpy as np

from .._datasets import decode_image, find_image_column, open_dataset
from .._digits import load_digits  # noqa: F401 (re-exported: evaluation reads the digits from here)
from .._errors import UsageError


def load_images(
    name: str,
    channels: int,
    split: str = "test",
    resolution: int | None = None,
    image_folder: bool = False,
    revision: str | None = None,
) -> np.ndarray:
    """
    The images of a `datasets` dataset as uint8 [N x H x W x `channels`], each decoded as training decodes it
    (`hf_ddpm._datasets`: transparent pixels white, no resizing).

    Args:
        name (`str`): a Hub dataset id or a local dataset folder; with `image_folder`, a folder of images.
        channels (`int`): 1 (grayscale), 3 (RGB) or 4 (RGBA).
        split (`str`, defaults to `"test"`): the split to read; every image of an image folder is read.
        resolution (`int`, *optional*): the side the images must have; a mismatch is an error, not a silent resize.
        image_folder (`bool`, defaults to `False`): read `name` with the `imagefolder` builder, as training reads
            `--train_data_dir`.
        revision (`str`, *optional*): the Hub revision of the dataset.
    """
    import datasets

    if image_folder:
        if not os.path.isdir(name):
            raise FileNotFoundError(f"--train_data_dir {name} is not a folder.")
        splits = datasets.load_dataset("imagefolder", data_dir=name)
        dataset, source = datasets.concatenate_datasets(list(splits.values())), name
    else:
        splits = open_dataset(name, revision=revision)
        if split not in splits:
            raise UsageError(f"--split {split!r} is not a split of {name}; it has: {', '.join(splits)}.")
        dataset, source = splits[split], f"{name} ({split})"
    images = [decode_image(image, channels) for image in dataset[find_image_column(dataset)]]
    shapes = sorted({image.shape for image in images})
    if len(shapes) > 1:
        raise ValueError(f"The images of {source} have different sizes: {shapes[:4]}.")
    height, width = shapes[0][:2]
    if resolution is not None and (height, width) != (resolution, resolution):
        raise ValueError(
            f"The images of {source} are {height}x{width}, but the model makes {resolution}x{resolution}."
        )
    return np.stack(images)
