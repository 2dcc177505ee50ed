# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The images that evaluation compares against: scikit-learn's digits, a local image folder, or a `datasets` split.

Every loader returns uint8 arrays [N x H x W x C], the format `DDPMPosteriorPipeline.bits_per_dim` and the feature
extractors take. The digits and their fixed split live in `hf_ddpm._digits` (shared with training).
"""

import os

import numpy as np
import PIL.Image

from .._datasets import decode_image, find_image_column, open_dataset
from .._digits import (  # noqa: F401 (re-exported: evaluation reads the digits from here)
    DIGITS_SPLIT_SEED,
    DIGITS_SPLITS,
    DIGITS_TEST_FRACTION,
    digits_split_indices,
    load_digits,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_image_folder(folder: str | os.PathLike, channels: int, resolution: int | None = None) -> np.ndarray:
    """
    Every image of a local folder (recursively, sorted by path), as uint8 [N x H x W x channels].

    Args:
        folder (`str`): the folder.
        channels (`int`): 1 (grayscale), 3 (RGB) or 4 (RGBA): images are converted to it, as training converts them.
        resolution (`int`, *optional*): the side the images must have; a mismatch is an error, not a silent resize.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"`train_data_dir` {folder} is not a folder.")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(f"`train_data_dir` {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    images = []
    for path in paths:
        with PIL.Image.open(path) as image:
            images.append(decode_image(image, channels))
    return _stack_checked(images, resolution, folder)


def load_hf_dataset(
    name: str, channels: int, split: str = "test", resolution: int | None = None, revision: str | None = None
) -> np.ndarray:
    """
    The images of a `datasets` dataset split (a Hub id or a local dataset folder), as uint8 [N x H x W x channels].
    The dataset, its image column and each image are read as training reads them (`hf_ddpm._datasets`).
    """
    dataset_dict = open_dataset(name, revision=revision)
    if split not in dataset_dict:
        raise ValueError(f"`split` {split!r} is not a split of {name}; it has: {', '.join(dataset_dict)}.")
    dataset = dataset_dict[split]
    images = [decode_image(image, channels) for image in dataset[find_image_column(dataset)]]
    return _stack_checked(images, resolution, f"{name} ({split})")


def _stack_checked(images: list[np.ndarray], resolution: int | None, source: str) -> np.ndarray:
    shapes = sorted({image.shape for image in images})
    if len(shapes) > 1:
        raise ValueError(f"The images of {source} have different sizes: {shapes[:4]}.")
    height, width = shapes[0][:2]
    if resolution is not None and (height, width) != (resolution, resolution):
        raise ValueError(
            f"The images of {source} are {height}x{width}, but the model makes {resolution}x{resolution}."
        )
    return np.stack(images)
