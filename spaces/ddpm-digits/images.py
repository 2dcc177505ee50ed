# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What the Space shows: model space <-> uint8, upscaled grids, trajectory GIFs and matplotlib figures as images."""

import io
import math

import numpy as np
import PIL.Image
import torch
from matplotlib.figure import Figure

CELL_PIXELS = 64  # each sample is upscaled (nearest neighbour) to about this many pixels a side
GRID_PAD = 2
GRID_PAD_VALUE = 96
GIF_FRAME_MS = 250


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N x C x H x W] in [-1, 1] (x_t may overshoot: clipped) to a uint8 [N x H x W x C] array."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def to_model_space(image: np.ndarray) -> torch.Tensor:
    """uint8 [H x W x C] to a [1 x C x H x W] float tensor in [-1, 1]."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def grid_scale(height: int, width: int) -> int:
    return max(1, CELL_PIXELS // max(height, width))


def make_grid(images: np.ndarray, num_columns: int | None = None) -> PIL.Image.Image:
    """
    Tile uint8 [N x H x W x C] images row by row, each upscaled by nearest neighbour to about `CELL_PIXELS`, with a
    border of `GRID_PAD` pixels around every cell.

    Returns:
        `PIL.Image.Image`: mode L (C = 1) or RGB (C = 3).
    """
    num, height, width, channels = images.shape
    num_columns = num_columns or math.ceil(math.sqrt(num))
    num_rows = math.ceil(num / num_columns)
    scale = grid_scale(height, width)
    cells = images.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest neighbour: each pixel a scale^2 block
    # blank cells to fill the last row, and each cell's border below and to its right
    padding = [(0, num_rows * num_columns - num), (0, GRID_PAD), (0, GRID_PAD), (0, 0)]
    cells = np.pad(cells, padding, constant_values=GRID_PAD_VALUE)
    cell_height, cell_width = cells.shape[1:3]
    rows = cells.reshape(num_rows, num_columns, cell_height, cell_width, channels).swapaxes(1, 2)
    grid = rows.reshape(num_rows * cell_height, num_columns * cell_width, channels)
    grid = np.pad(grid, [(GRID_PAD, 0), (GRID_PAD, 0), (0, 0)], constant_values=GRID_PAD_VALUE)  # top, left border
    return PIL.Image.fromarray(grid[..., 0] if channels == 1 else grid)


def gif_bytes(frames: list[PIL.Image.Image]) -> bytes:
    """An endlessly looping GIF of `frames`; the last frame (the sample) is held longer."""
    buffer = io.BytesIO()
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_FRAME_MS * 6]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buffer.getvalue()


def figure_to_image(figure: Figure) -> PIL.Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return PIL.Image.open(buffer).convert("RGB")
