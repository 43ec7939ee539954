"""The built-in digits: scikit-learn's 1797 8x8 grayscale handwritten digits (no download).

Pixel values 0..16 map to uint8 by round(v * 255 / 16), so level 16 is 255 and the 17 levels
are spread over the full range. A fixed permutation (numpy seed 0) puts the last 297 digits in
the 'test' split and the first 1500 in 'train', whatever the config. Images stay 8x8x1 unless
config.data.image_size asks for another size (antialiased bilinear resize). At 8x8 the data have
NUM_LEVELS = 17 quantization levels (`score_jax.data.quantization_levels`); resized digits take
any 8-bit value and count as 256-level data.
"""

from __future__ import annotations

import functools

import numpy as np
from sklearn.datasets import load_digits

from score_jax.data.preprocess import resize
from score_jax.data.source import ArraySource, check_split

NUM_TEST = 297
# Pixel values 0..16: the quantization levels of the digits at their native 8x8 size.
NUM_LEVELS = 17


@functools.cache
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int32)


def digits_source(config, split: str) -> ArraySource:
    """'train' (1500 digits) or 'test' (297 digits): uint8 [N, S, S, 1] with S = image_size."""
    check_split(split, ("train", "test"), "DIGITS")
    if config.data.num_channels != 1:
        raise ValueError(
            f"DIGITS are grayscale: config.data.num_channels must be 1, got "
            f"{config.data.num_channels}."
        )
    images, labels = _all_digits()
    order = np.random.default_rng(0).permutation(len(images))
    chosen = order[-NUM_TEST:] if split == "test" else order[:-NUM_TEST]
    images, labels = images[chosen], labels[chosen]
    size = config.data.image_size
    if size != images.shape[1]:
        images = np.stack([resize(image, size) for image in images])
    return ArraySource(images, labels)
