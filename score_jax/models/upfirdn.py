"""FIR up/down-sampling of NHWC images (StyleGAN2's upfirdn2d), written with lax convolutions.

`upfirdn2d` zero-stuffs by `up`, pads, convolves with a 2-D FIR kernel and keeps every
`down`-th sample, exactly as the official op. Here the zero-stuffing is an `lhs_dilation`, the
decimation a stride and the filtering one depthwise convolution, so XLA sees a single conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """A 1-D taps list becomes outer(k, k); the 2-D kernel is normalised to sum 1 (float32)."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / np.sum(k)


def upfirdn2d(
    x: jax.Array, kernel: np.ndarray, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> jax.Array:
    """x [B, H, W, C] -> upsample by `up`, pad (lo, hi), FIR-filter (true convolution), decimate.

    Output size per side: (H * up + lo + hi - kh) // down + 1, as the official op.
    """
    channels = x.shape[-1]
    # A true convolution is a correlation with the flipped kernel; one copy per channel.
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])
    w = jnp.asarray(np.tile(flipped[:, :, None, None], (1, 1, 1, channels)), dtype=x.dtype)
    lo, hi = pad
    # lhs_dilation leaves no zeros after the last sample; upfirdn's upsampled signal has up-1.
    padding = ((lo, hi + up - 1), (lo, hi + up - 1))
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(down, down),
        padding=padding,
        lhs_dilation=(up, up),
        dimension_numbers=_NHWC,
        feature_group_count=channels,
    )


def upsample_2d(x: jax.Array, k: Sequence[float], factor: int = 2, gain: float = 1.0) -> jax.Array:
    """FIR upsampling [B, H, W, C] -> [B, H*factor, W*factor, C]; constant input keeps gain."""
    kernel = setup_kernel(k) * (gain * factor**2)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(
    x: jax.Array, k: Sequence[float], factor: int = 2, gain: float = 1.0
) -> jax.Array:
    """FIR downsampling [B, H, W, C] -> [B, H/factor, W/factor, C]."""
    kernel = setup_kernel(k) * gain
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def conv2d(x: jax.Array, w: jax.Array, stride: int, padding, dtype=jnp.float32, dilation=1):
    """NHWC x HWIO convolution with `dtype` operands and a float32 result."""
    return lax.conv_general_dilated(
        x.astype(dtype),
        w.astype(dtype),
        window_strides=(stride, stride),
        padding=padding,
        lhs_dilation=(dilation, dilation),
        dimension_numbers=_NHWC,
        preferred_element_type=jnp.float32,
    )


def upsample_conv_2d(
    x: jax.Array,
    w: jax.Array,
    k: Sequence[float],
    factor: int = 2,
    gain: float = 1.0,
    dtype=jnp.float32,
) -> jax.Array:
    """Transposed conv (stride `factor`, weights w [kh, kw, in, out]) then FIR filtering.

    The official JAX semantics; the PyTorch port of this op cannot run (negative-step slice).
    """
    conv = w.shape[0]
    kernel = setup_kernel(k) * (gain * factor**2)
    p = (kernel.shape[0] - factor) - (conv - 1)
    # Stride-2 transposed conv = correlation of the zero-stuffed, (conv-1)-padded input.
    pad = ((conv - 1, conv - 1), (conv - 1, conv - 1))
    y = conv2d(x, w, 1, pad, dtype, dilation=factor)
    return upfirdn2d(y, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(
    x: jax.Array,
    w: jax.Array,
    k: Sequence[float],
    factor: int = 2,
    gain: float = 1.0,
    dtype=jnp.float32,
) -> jax.Array:
    """FIR filtering then a strided VALID conv with w [kh, kw, in, out]."""
    conv = w.shape[0]
    kernel = setup_kernel(k) * gain
    p = (kernel.shape[0] - factor) + (conv - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return conv2d(x, w, factor, "VALID", dtype)


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling [B, H, W, C] -> [B, H*f, W*f, C]."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Mean pooling over factor x factor blocks."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
