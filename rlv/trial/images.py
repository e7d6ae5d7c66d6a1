"""Image grids as PNG bytes (what a trial sends to the driver, which writes them into the store)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

PAD = 2  # pixels of black between tiles


def png_grid(images: torch.Tensor, columns: int) -> bytes:
    """uint8 images (N, C, H, W), C in {1, 3}, tiled row-major `columns` wide, as PNG bytes."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * (h + PAD) + PAD, columns * (w + PAD) + PAD, c), dtype=np.uint8)
    tiles = images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    for i, tile in enumerate(tiles):
        r, k = divmod(i, columns)
        y, x = PAD + r * (h + PAD), PAD + k * (w + PAD)
        canvas[y : y + h, x : x + w] = tile
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)  # mode L or RGB
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
