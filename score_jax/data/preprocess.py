"""Pixel conversions: uint8 -> float, uniform dequantization, data scalers, crops and resizes.

Images travel through the input pipeline as uint8 NHWC (four times less host memory and
host-to-device traffic than float32) and become floats on the device with `to_float`. The
geometric operations below work on one uint8 HWC image with PIL and follow the official
score_sde preprocessing (center crops, `resize_small`, antialiased resizes); PIL's resampling
filters are antialiased when shrinking, like `tf.image.resize(..., antialias=True)`, but the
pixel values are not bit-identical to TensorFlow's.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def to_float(
    images: jax.Array,
    key: jax.Array | None = None,
    dequantize: bool = False,
    levels: int = 256,
) -> jax.Array:
    """uint8 images -> float32 in [0, 1]: k / (levels - 1), or (k + U[0, 1)) / levels when
    `dequantize`, where k = round(x * (levels - 1) / 255) is the pixel's quantization level.

    `levels` is the dataset's number of quantization levels (`quantization_levels`), stored
    evenly over 0..255; with 256 (8-bit data) k = x, which gives x / 255 and the official
    (x + u) / 256. Float input (toy continuous data) passes through as float32. Shapes are
    unchanged.
    """
    images = jnp.asarray(images)
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images.astype(jnp.float32)
    levels = operator.index(levels)  # a Python or numpy integer: it sets the grid statically
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be an integer in [2, 256], got {levels!r}")
    # (levels - 1) / 255 is exactly 1 for 8-bit data, so k = x bit for bit there.
    k = jnp.round(images.astype(jnp.float32) * ((levels - 1) / 255.0))
    if not dequantize:
        return k / float(levels - 1)
    if key is None:
        raise ValueError("to_float(dequantize=True) needs a PRNG `key` for the uniform noise.")
    # The official rule (U + 255 * x01) / 256 maps level k to [k/256, (k+1)/256); any number of
    # levels L maps k to [k/L, (k+1)/L), so the L bins tile [0, 1).
    return (k + jax.random.uniform(key, k.shape, jnp.float32)) / float(levels)


def get_scaler(config) -> Callable[[jax.Array], jax.Array]:
    """[0, 1] -> [-1, 1] when config.data.centered, else the identity."""
    if config.data.centered:
        return lambda x: x * 2.0 - 1.0
    return lambda x: x


def get_inverse_scaler(config) -> Callable[[jax.Array], jax.Array]:
    """[-1, 1] -> [0, 1] when config.data.centered, else the identity."""
    if config.data.centered:
        return lambda x: (x + 1.0) / 2.0
    return lambda x: x


def flip_left_right(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Mirrors images [B, H, W, C] along W where the boolean `flips` [B] is True."""
    out = images.copy()
    out[flips] = images[flips, :, ::-1]
    return out


# --- geometry on one uint8 HWC image -------------------------------------------------------------


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array[..., :channels]


def _resize(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    # PIL clips the filter overshoot to [0, 255] and rounds, which is what a uint8 cast of the
    # official float result amounts to (up to TF's own rounding).
    resized = _to_pil(image).resize((width, height), resample=resample)
    return _from_pil(resized, image.shape[-1])


def resize(image: np.ndarray, size: int, bicubic: bool = False) -> np.ndarray:
    """Antialiased bilinear (or bicubic) resize of [H, W, C] to [size, size, C]."""
    return _resize(image, size, size, Image.BICUBIC if bicubic else Image.BILINEAR)


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre size x size window of [H, W, C] (offsets rounded down, as the official)."""
    h, w = image.shape[:2]
    if size > min(h, w):
        raise ValueError(f"central_crop: crop {size} is larger than the image {h}x{w}.")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def resize_small(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize so that the shorter side becomes `size` (aspect kept)."""
    h, w = image.shape[:2]
    ratio = size / min(h, w)
    # Python's round is half-to-even, like tf.round in the official resize_small.
    return _resize(image, round(h * ratio), round(w * ratio), Image.BILINEAR)


def crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Largest centred square, then an antialiased bicubic resize to size x size."""
    return resize(central_crop(image, min(image.shape[:2])), size, bicubic=True)
