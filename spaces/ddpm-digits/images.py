# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""What the Space shows: model space <-> uint8, upscaled grids, trajectory GIFs and matplotlib figures as images."""

import atexit
import contextlib
import functools
import io
import math
import os
import shutil
import tempfile
import time
import uuid

import numpy as np
import PIL.Image
import torch
from matplotlib.figure import Figure  # no pyplot: its global state is not thread-safe

CELL_PIXELS = 64  # each sample is upscaled (nearest neighbour) to about this many pixels a side
GRID_PAD = 2
GRID_PAD_VALUE = 96
GIF_FRAME_MS = 250
GIF_MAX_AGE_S = 600


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N x C x H x W] in [-1, 1] (x_t may overshoot: clipped) to a uint8 [N x H x W x C] array."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def to_model_space(image: np.ndarray) -> torch.Tensor:
    """uint8 [H x W x C] to a [1 x C x H x W] float tensor in [-1, 1] (the pipeline's own converter is private)."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def grid_scale(height: int, width: int) -> int:
    return max(1, CELL_PIXELS // max(height, width))


def make_grid(images: np.ndarray, num_columns: int | None = None) -> PIL.Image.Image:
    """
    Tile uint8 [N x H x W x C] images row by row, each upscaled by nearest neighbour to about `CELL_PIXELS`.

    Returns:
        `PIL.Image.Image`: mode L (C = 1) or RGB (C = 3).
    """
    num, height, width, channels = images.shape
    num_columns = num_columns or math.ceil(math.sqrt(num))
    num_rows = math.ceil(num / num_columns)
    scale = grid_scale(height, width)
    cell_h, cell_w = height * scale, width * scale
    canvas = np.full(
        (num_rows * (cell_h + GRID_PAD) + GRID_PAD, num_columns * (cell_w + GRID_PAD) + GRID_PAD, channels),
        GRID_PAD_VALUE,
        dtype=np.uint8,
    )
    cells = images.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest neighbour: each pixel a scale^2 block
    for i, cell in enumerate(cells):
        top = GRID_PAD + (i // num_columns) * (cell_h + GRID_PAD)
        left = GRID_PAD + (i % num_columns) * (cell_w + GRID_PAD)
        canvas[top : top + cell_h, left : left + cell_w] = cell
    return PIL.Image.fromarray(canvas[..., 0] if channels == 1 else canvas)


def save_gif(frames: list[PIL.Image.Image], path: str | os.PathLike) -> None:
    """An endlessly looping GIF; the last frame (the sample) is held longer. Written atomically."""
    path = os.fspath(path)
    partial = f"{path}.{uuid.uuid4().hex}.part"
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_FRAME_MS * 6]
    try:
        frames[0].save(
            partial, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False
        )
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


@functools.cache
def _gif_dir() -> str:
    folder = tempfile.mkdtemp(prefix="ddpm-space-gifs-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def save_temporary_gif(frames: list[PIL.Image.Image]) -> str:
    """
    `save_gif` to a fresh file of a temporary folder; return its path. GIFs older than `GIF_MAX_AGE_S` are removed
    first (gradio serves its own copy of each), so a long-running Space does not fill its disk.
    """
    folder = _gif_dir()
    now = time.time()
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile by a concurrent request
            if now - entry.stat().st_mtime > GIF_MAX_AGE_S:
                os.remove(entry.path)
    path = os.path.join(folder, f"trajectory-{uuid.uuid4().hex}.gif")
    save_gif(frames, path)
    return path


def figure_to_image(figure: Figure) -> PIL.Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")
