# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Reading the images of a dataset, one way for training and evaluation: the dataset, its image column, the decoder."""

import io
import os

import numpy as np
import PIL.Image

from ._errors import UsageError

# What opening, decoding or converting a bad image raises: training skips such an image.
DECODE_ERRORS = (OSError, ValueError, TypeError, SyntaxError, PIL.Image.DecompressionBombError)


def open_dataset(
    name: str | None,
    config_name: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    data_dir: str | None = None,
    streaming: bool = False,
):
    """
    A Hub dataset id, a local dataset (a `save_to_disk` folder, or files `datasets` reads) or, with `data_dir`, a
    folder of images (`datasets`' imagefolder), as a `DatasetDict`; with `streaming`, as an `IterableDatasetDict`
    read as a stream (nothing downloaded or cached first).
    """
    import datasets

    if data_dir is not None:
        name = "imagefolder"
    elif not streaming and os.path.isfile(os.path.join(name, "dataset_dict.json")):
        return datasets.load_from_disk(name)
    loaded = datasets.load_dataset(
        name, config_name, data_dir=data_dir, cache_dir=cache_dir, revision=revision, streaming=streaming
    )
    if isinstance(loaded, datasets.IterableDataset):
        return datasets.IterableDatasetDict({"train": loaded})
    return datasets.DatasetDict({"train": loaded}) if isinstance(loaded, datasets.Dataset) else loaded


def find_image_column(dataset, requested: str | None = None) -> str:
    """The image column: `requested` (checked), else the first `datasets.Image` column, else one named image/img."""
    import datasets

    columns = list(dataset.column_names)
    if requested is not None:
        if requested not in columns:
            raise UsageError(f"--image_column {requested!r} is not a column of the dataset; it has: {columns}.")
        return requested
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img", "images", "pixel_values"):
        if name in columns:
            return name
    raise UsageError(
        f"No image column found among {columns}: no `datasets.Image` feature and none named image, img, images or"
        " pixel_values (training: pass --image_column)."
    )


def decode_image(value, channels: int, resolution: int | None = None, center_crop: bool = False) -> np.ndarray:
    """
    One stored image (a PIL image, a {"bytes", "path"} dict or an array) as a uint8 [H x W x `channels`] array. With
    `resolution`, its shorter side is resized to it and, with `center_crop`, its center R x R kept. Transparent pixels
    become white unless the alpha channel is kept. Raises one of `DECODE_ERRORS`.
    """
    if isinstance(value, PIL.Image.Image):
        image = value
    elif isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        image = PIL.Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    elif isinstance(value, (np.ndarray, list)):
        image = PIL.Image.fromarray(np.asarray(value, dtype=np.uint8))
    else:
        raise TypeError(f"not an image: {type(value).__name__}")
    image.load()  # decode now: a truncated file fails here, not later
    if channels != 4 and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    if resolution is not None and min(image.size) != resolution:
        scale = resolution / min(image.size)
        image = image.resize([max(resolution, round(side * scale)) for side in image.size], PIL.Image.BILINEAR)
    if resolution is not None and center_crop:
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.array(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
