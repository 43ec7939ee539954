"""FIR up/down-sampling of NHWC images (StyleGAN2's upfirdn2d), written with plain lax ops.

`upfirdn2d` zero-stuffs by `up`, pads, convolves with a FIR kernel and keeps every `down`-th
sample, exactly as the official op. The official kernels are separable (outer(k, k) of a 1-D
taps list), and for those the filter runs as two 1-D passes of shifted, strided slices: XLA fuses
them into one elementwise loop, 30-150x faster on CPU than a depthwise convolution with input
dilation. A general 2-D kernel falls back to one depthwise convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from score_jax.models import conv

_NHWC = ("NHWC", "HWIO", "NHWC")


def setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """A 1-D taps list becomes outer(k, k); the 2-D kernel is normalised to sum 1 (float32)."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / np.sum(k)


def zero_stuff(x: jax.Array, factor: int, axis: int) -> jax.Array:
    """Inserts factor-1 zeros after every sample along `axis` (length n -> n * factor)."""
    if factor == 1:
        return x
    stacked = jnp.stack([x] + [jnp.zeros_like(x)] * (factor - 1), axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= factor
    return stacked.reshape(shape)


def fir_1d(
    x: jax.Array, taps: np.ndarray, axis: int, up: int = 1, down: int = 1, pad=(0, 0)
) -> jax.Array:
    """upfirdn along one axis: zero-stuff by `up`, pad (lo, hi), convolve with taps, decimate."""
    x = zero_stuff(x, up, axis)
    widths = [(0, 0)] * x.ndim
    widths[axis] = pad
    x = jnp.pad(x, widths)
    n_taps = len(taps)
    n_out = (x.shape[axis] - n_taps) // down + 1
    out = None
    # Convolution = correlation with the reversed taps.
    for j, tap in enumerate(taps[::-1]):
        window = lax.slice_in_dim(x, j, j + down * (n_out - 1) + 1, stride=down, axis=axis)
        term = window * jnp.asarray(tap, x.dtype)
        out = term if out is None else out + term
    return out


def upfirdn2d(
    x: jax.Array,
    kernel: np.ndarray,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> jax.Array:
    """x [B, H, W, C] -> upsample by `up`, pad (lo, hi), FIR-filter (true convolution), decimate.

    `kernel` is 2-D (any, via a depthwise conv) or a pair (taps_h, taps_w) of 1-D taps whose
    outer product is the kernel. Output size per side: (H up + lo + hi - k) // down + 1.
    """
    if isinstance(kernel, tuple):
        taps_h, taps_w = kernel
        x = fir_1d(x, taps_h, 1, up, down, pad)
        return fir_1d(x, taps_w, 2, up, down, pad)
    channels = x.shape[-1]
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])
    w = jnp.asarray(np.tile(flipped[:, :, None, None], (1, 1, 1, channels)), dtype=x.dtype)
    x = zero_stuff(zero_stuff(x, up, 1), up, 2)
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(down, down),
        padding=(pad, pad),
        dimension_numbers=_NHWC,
        feature_group_count=channels,
    )


def _kernel(k: Sequence[float], scale: float):
    """The normalised FIR kernel times `scale`: separable taps for 1-D k, else a 2-D array."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        taps = k / np.sum(k)
        # outer(taps * scale, taps) = setup_kernel(k) * scale.
        return (taps * np.float32(scale), taps), len(k)
    kernel = setup_kernel(k) * scale
    return kernel, kernel.shape[0]


def upsample_2d(x: jax.Array, k: Sequence[float], factor: int = 2, gain: float = 1.0) -> jax.Array:
    """FIR upsampling [B, H, W, C] -> [B, H*factor, W*factor, C]; constant input keeps gain."""
    kernel, size = _kernel(k, gain * factor**2)
    p = size - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(
    x: jax.Array, k: Sequence[float], factor: int = 2, gain: float = 1.0
) -> jax.Array:
    """FIR downsampling [B, H, W, C] -> [B, H/factor, W/factor, C]."""
    kernel, size = _kernel(k, gain)
    p = size - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def conv2d(x: jax.Array, w: jax.Array, stride: int, padding, dtype=jnp.float32, kernels="xla"):
    """NHWC x HWIO convolution with `dtype` operands and a float32 result."""
    x, w = x.astype(dtype), w.astype(dtype)
    return conv.convolve(x, w, (stride, stride), padding, jnp.float32, (1, 1), kernels)


def upsample_conv_2d(
    x: jax.Array,
    w: jax.Array,
    k: Sequence[float],
    factor: int = 2,
    gain: float = 1.0,
    dtype=jnp.float32,
    kernels: str = "xla",
) -> jax.Array:
    """Transposed conv (stride `factor`, weights w [kh, kw, in, out]) then FIR filtering.

    The official JAX semantics; the PyTorch port of this op cannot run (negative-step slice).
    A stride-f transposed conv is a correlation of the input dilated by f, padded by conv-1.
    With kernels='xla' that is one input-dilated convolution (no zeros stored or multiplied);
    the 'cpu' kernels zero-stuff the input instead (f-1 trailing zeros, so its high side needs
    f-1 less padding), which keeps the convolution canonical for models/conv.py's backward.
    """
    conv = w.shape[0]
    kernel, size = _kernel(k, gain * factor**2)
    p = (size - factor) - (conv - 1)
    if kernels == "cpu":
        y = zero_stuff(zero_stuff(x, factor, 1), factor, 2)
        edge = (conv - 1, conv - 1 - (factor - 1))
        y = conv2d(y, w, 1, (edge, edge), dtype, kernels)
    else:
        y = lax.conv_general_dilated(
            x.astype(dtype),
            w.astype(dtype),
            (1, 1),
            ((conv - 1, conv - 1), (conv - 1, conv - 1)),
            lhs_dilation=(factor, factor),
            dimension_numbers=_NHWC,
            preferred_element_type=jnp.float32,
        )
    return upfirdn2d(y, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(
    x: jax.Array,
    w: jax.Array,
    k: Sequence[float],
    factor: int = 2,
    gain: float = 1.0,
    dtype=jnp.float32,
    kernels: str = "xla",
) -> jax.Array:
    """FIR filtering then a strided VALID conv with w [kh, kw, in, out]."""
    conv = w.shape[0]
    kernel, size = _kernel(k, gain)
    p = (size - factor) + (conv - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return conv2d(x, w, factor, "VALID", dtype, kernels)


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling [B, H, W, C] -> [B, H*f, W*f, C]."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Mean pooling over factor x factor blocks."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
