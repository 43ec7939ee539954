"""PNG pictures of samples: a grid of images, or a scatter plot of 2-D points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, padding: int = 1) -> np.ndarray:
    """[N, H, W, C] floats in [0, 1] -> uint8 [rows*(H+p)+p, cols*(W+p)+p, C] grid."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
    pixels = np.clip(np.round(np.asarray(images, np.float64) * 255.0), 0, 255).astype(np.uint8)
    for i in range(n):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def scatter_image(points: np.ndarray, size: int = 256, limit: float | None = None) -> np.ndarray:
    """[N, 2] points -> uint8 [size, size, 1] picture: 3x3 white dots on black.

    The square [-limit, limit]^2 is shown (default: the 99th percentile of |x|, so a few
    outliers do not squash the picture); points outside are left out.
    """
    points = np.asarray(points, np.float64)[:, :2]
    points = points[np.all(np.isfinite(points), axis=1)]
    picture = np.zeros((size, size, 1), np.uint8)
    if len(points) == 0:
        return picture
    if limit is None:
        limit = max(float(np.percentile(np.abs(points), 99)) * 1.1, 1e-6)
    pix = np.round((points + limit) / (2 * limit) * (size - 1)).astype(int)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            x, y = pix[:, 0] + dx, size - 1 - pix[:, 1] + dy
            inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            picture[y[inside], x[inside]] = 255
    return picture


def save_samples_png(samples: np.ndarray, path: str | Path, upscale: int = 1) -> Path:
    """Writes samples (images in [0, 1] [N, H, W, C], or points [N, D]) as one PNG."""
    samples = np.asarray(samples)
    picture = scatter_image(samples) if samples.ndim == 2 else image_grid(samples)
    if upscale > 1:
        picture = picture.repeat(upscale, axis=0).repeat(upscale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(path)
    return path
