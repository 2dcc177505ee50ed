# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Which column of a `datasets` dataset holds the images: one rule for training and evaluation."""

from ._errors import UsageError


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
