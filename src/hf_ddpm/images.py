"""Turning model-space tensors into pictures: grids of tiles, zoomed for tiny images."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

if TYPE_CHECKING:
    import torch


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N x C x H x W] in [-1, 1] (a tensor), or [N x H x W x C] in [0, 1] or uint8 (an array) -> uint8 NHWC."""
    import torch  # here, not at the top: `hf-ddpm sample --help` imports this module

    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return images
    if isinstance(images, torch.Tensor):
        images = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return (np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8)


def auto_scale(size: int, target: int = 64) -> int:
    """An integer nearest-neighbour zoom so that tiles are at least `target` pixels (8x8 digits become 64x64)."""
    return max(1, math.ceil(target / size))


def image_grid(images: torch.Tensor | np.ndarray, columns: int | None = None, scale: int = 1, padding: int = 1):
    """
    Tile images into one PIL image.

    Args:
        images: [N x C x H x W] in [-1, 1], or [N x H x W x C] in [0, 1] or uint8.
        columns: tiles per row; a near-square grid when `None`.
        scale: nearest-neighbour zoom of each tile.
        padding: pixels between tiles (drawn in mid grey).
    """
    array = to_uint8(images)
    count, height, width, channels = array.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tile_h, tile_w = height * scale, width * scale
    canvas = np.full(
        (rows * tile_h + (rows + 1) * padding, columns * tile_w + (columns + 1) * padding, channels), 128, np.uint8
    )
    for index, image in enumerate(array):
        row, column = divmod(index, columns)
        top, left = padding + row * (tile_h + padding), padding + column * (tile_w + padding)
        canvas[top : top + tile_h, left : left + tile_w] = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return PIL.Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
