"""`.npz` datasets: an 'images' uint8 NHWC array, optional 'labels', optional test arrays.

The file at config.data.path holds 'images' [N, H, W, C] uint8 with H = W = image_size and
C = num_channels, and may hold 'labels' [N] (integers; 0 when absent). If it also holds
'test_images' (and optionally 'test_labels') those are the 'test' split; otherwise the test
split is config.data.holdout examples held out of 'images' (see `holdout_split`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from score_jax.data.source import ArraySource, check_split, holdout_split


def _check_images(images: np.ndarray, config, what: str) -> None:
    size, channels = config.data.image_size, config.data.num_channels
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"{what} must be a uint8 array [N, H, W, C]; found {images.dtype} {images.shape}."
        )
    if images.shape[1:] != (size, size, channels):
        raise ValueError(
            f"{what} has images of shape {images.shape[1:]}, but config.data.image_size="
            f"{size} and config.data.num_channels={channels} ask for {(size, size, channels)}."
        )


def _labels(data, key: str, n: int, path: Path) -> np.ndarray:
    if key not in data.files:
        return np.zeros(n, np.int32)
    labels = np.asarray(data[key])
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: '{key}' must be integers of shape ({n},); found "
            f"{labels.dtype} {labels.shape}."
        )
    return labels.astype(np.int32)


def npz_source(config, split: str) -> ArraySource:
    """'train' or 'test' examples of the .npz file config.data.path."""
    check_split(split, ("train", "test"), "npz")
    path = Path(config.data.get("path") or "")
    if not path.is_file():
        raise FileNotFoundError(
            f"npz dataset: config.data.path={str(path)!r} is not a file. Set it to an .npz "
            f"holding 'images' (uint8 [N, H, W, C]) and optionally 'labels'."
        )
    with np.load(path) as data:
        if "images" not in data.files:
            raise ValueError(f"{path} holds {data.files}; an 'images' array is required.")
        has_test = "test_images" in data.files
        prefix = "test_" if split == "test" and has_test else ""
        images = np.asarray(data[prefix + "images"])
        _check_images(images, config, f"{path}: '{prefix}images'")
        source = ArraySource(images, _labels(data, prefix + "labels", len(images), path))
    if has_test:
        return source
    return holdout_split(source, split, config.data.get("holdout", 0), f"npz {path}")
