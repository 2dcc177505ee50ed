# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The images that evaluation compares against: scikit-learn's digits, a local image folder, or a `datasets` split.

Every loader returns uint8 arrays [N x H x W x C], the format `DDPMPosteriorPipeline.bits_per_dim` and the feature
extractors take.

The digits split is the DDPM's own held-out split (`hf_ddpm.training.data.load_digits_dataset`), which is also the
split the digits classifier was trained and tested on:
`sklearn.model_selection.train_test_split(range(1797), test_size=0.1, stratify=labels, random_state=0)`, i.e. 1,617
training and 180 test images with the class proportions of the full set. Pixels 0..16 map to uint8 by
round(v * 255 / 16), as the training code does.
"""

import os

import numpy as np
import PIL.Image

DIGITS_SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.1  # = hf_ddpm.training.data.DIGITS_HELDOUT_FRACTION
DIGITS_SPLIT_SEED = 0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, allowed))}, got {value!r}.")


def load_digits(split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """
    scikit-learn's 8x8 digits as uint8 images.

    Args:
        split (`"train"`, `"test"` or `"all"`, defaults to `"all"`):
            The fixed stratified split described in the module docstring, or all 1,797 images.

    Returns:
        `tuple`: the images, uint8 [N x 8 x 8 x 1], and their labels, int64 [N].
    """
    _check_choice("split", split, DIGITS_SPLITS)
    from sklearn.datasets import load_digits as sklearn_load_digits

    digits = sklearn_load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    if split == "all":
        return images, labels
    train_index, test_index = digits_split_indices(labels)
    index = train_index if split == "train" else test_index
    return images[index], labels[index]


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted indices of the fixed stratified train and test splits of the digits."""
    from sklearn.model_selection import train_test_split

    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return np.sort(train_index), np.sort(test_index)


def load_image_folder(folder: str | os.PathLike, channels: int, resolution: int | None = None) -> np.ndarray:
    """
    Every image of a local folder (recursively, sorted by path), as uint8 [N x H x W x channels].

    Args:
        folder (`str`): the folder.
        channels (`int`): 1 (grayscale) or 3 (RGB): images are converted to it.
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
            images.append(_to_array(image, channels))
    return _stack_checked(images, resolution, folder)


def load_hf_dataset(
    name: str, channels: int, split: str = "test", resolution: int | None = None, revision: str | None = None
) -> np.ndarray:
    """
    The images of a `datasets` dataset split (a Hub id or a local dataset folder), as uint8 [N x H x W x channels].
    The image column is the first of `image` or `img` present, or the only image feature.
    """
    import datasets

    dataset = datasets.load_dataset(name, split=split, revision=revision)
    column = _image_column(dataset)
    images = [_to_array(image, channels) for image in dataset[column]]
    return _stack_checked(images, resolution, f"{name} ({split})")


def _image_column(dataset) -> str:
    import datasets

    image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    for name in ("image", "img"):
        if name in dataset.column_names:
            return name
    if len(image_columns) == 1:
        return image_columns[0]
    raise ValueError(f"Cannot tell the image column of the dataset among {dataset.column_names}.")


def _to_array(image: PIL.Image.Image, channels: int) -> np.ndarray:
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels}.")
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return array[..., None] if channels == 1 else array


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
