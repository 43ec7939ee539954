"""Image folders: every PNG/JPEG under config.data.path (recursively), any resolution.

Each image is converted to RGB (num_channels 3) or grayscale (1), cropped to its largest
centred square and resized (antialiased bicubic) to image_size, as the official crop_resize.
Files are listed in sorted path order, so example i is the same file on every host.

Corrupt files are SKIPPED with a warning naming each one: when the folder is opened every
file is checked with PIL (`Image.verify`, which reads the whole file and its checksums, without
decoding pixels), and only the files that pass are examples. A file that passes the check but
still fails to decode later stops the run with an error naming it, rather than silently
changing the epoch.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from score_jax.data.preprocess import crop_resize
from score_jax.data.source import DecodedSource, Source, decode_pool, holdout_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _is_readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001 -- PIL raises many types for broken files
        return False


@functools.cache
def list_images(folder: str) -> tuple[str, ...]:
    """Sorted paths of the readable images under `folder`, warning about each corrupt one."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder not found: config.data.path={folder!r}. Point it at a folder of "
            f"PNG/JPEG images."
        )
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    readable = list(decode_pool().map(_is_readable, paths))
    for path, ok in zip(paths, readable, strict=True):
        if not ok:
            warnings.warn(f"Skipping corrupt image file {path}", stacklevel=2)
    good = tuple(str(p) for p, ok in zip(paths, readable, strict=True) if ok)
    if not good:
        raise FileNotFoundError(f"No readable PNG/JPEG images under config.data.path={folder!r}.")
    return good


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 [size, size, channels] (centre square, bicubic resize)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    except Exception as error:
        raise ValueError(f"Cannot decode image file {path}: {error}") from error
    if array.ndim == 2:
        array = array[..., None]
    return crop_resize(array, size)


def folder_source(config, split: str) -> Source:
    """'train' or 'test' (config.data.holdout held out, or all) images of the folder."""
    channels = config.data.num_channels
    if channels not in (1, 3):
        raise ValueError(f"Image folders need config.data.num_channels 1 or 3, got {channels}.")
    folder = str(config.data.get("path") or "")
    paths = list_images(folder)
    size = config.data.image_size

    def load(i: int) -> tuple[np.ndarray, int]:
        return load_image(paths[i], size, channels), 0

    source = DecodedSource(len(paths), load)
    return holdout_split(source, split, config.data.get("holdout", 0), f"folder {folder}")
