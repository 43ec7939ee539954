"""2-D convolution (NHWC x HWIO) whose gradients XLA:CPU runs fast inside loops.

JAX differentiates `lax.conv_general_dilated` into convolutions with permuted dimension labels
(the kernel gradient is `f01b_i01o->01bf`, the input gradient swaps the kernel's i and o). At
the top level of a program XLA:CPU rewrites such convolutions into its canonical NHWC form and
runs them with its library kernels, but inside a while loop (`lax.scan` over training steps, a
sampler's loop, an ODE solver) it leaves them to a generic loop emitter that is 10-50x slower:
the kernel gradient of a 3x3 conv on 16x32x32x64 took 72 ms at the top level and 3.3 s inside a
one-step scan. `conv2d` has the same values and gradients as lax's convolution, but its backward
pass spells out the transposes, so each of its convolutions is already canonical.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from score_jax.models import sums

_NHWC = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x, w, strides, padding, lhs_dilation=(1, 1), rhs_dilation=(1, 1), out_dtype=None):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=_NHWC,
        preferred_element_type=out_dtype,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv2d(x, w, strides: tuple[int, int], padding: Padding, dilation: tuple[int, int], out_dtype):
    return _conv(x, w, strides, padding, rhs_dilation=dilation, out_dtype=out_dtype)


def _conv2d_fwd(x, w, strides, padding, dilation, out_dtype):
    out = _conv(x, w, strides, padding, rhs_dilation=dilation, out_dtype=out_dtype)
    return out, (x, w)


def _conv2d_bwd(strides, padding, dilation, out_dtype, residuals, dy):
    x, w = residuals
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw_), ((pt, _), (pl, _)) = strides, dilation, padding
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw_ + 1  # the dilated kernel's extent
    (h, wd), (ho, wo) = x.shape[1:3], dy.shape[1:3]
    # dx: the stride-dilated dy correlated with the flipped kernel, its in/out channels swapped.
    w_flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    pad_dx = (
        (span_h - 1 - pt, h - sh * (ho - 1) - 1 + pt),
        (span_w - 1 - pl, wd - sw * (wo - 1) - 1 + pl),
    )
    dx = _conv(
        dy.astype(w.dtype), w_flipped, (1, 1), pad_dx, (sh, sw), dilation, out_dtype=jnp.float32
    )
    # dw: x as a batch of C_in one-channel-per-example images, dy as a [Ho, Wo, B, C_out] kernel
    # dilated by the stride; output rows and columns a kernel dilation apart, the first kh x kw
    # of them, are the kernel gradient [C_in, kh, kw, C_out].
    x_t = jnp.transpose(x, (3, 1, 2, 0))
    dy_t = jnp.transpose(dy.astype(x.dtype), (1, 2, 0, 3))
    dw = _conv(x_t, dy_t, dilation, padding, rhs_dilation=(sh, sw), out_dtype=jnp.float32)
    dw = jnp.transpose(dw[:, :kh, :kw, :], (1, 2, 0, 3))
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(
    x: jax.Array,
    w: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
    preferred_element_type: Any = None,
    dilation: Sequence[int] = (1, 1),
) -> jax.Array:
    """x [B, H, W, C_in] (*) w [kh, kw, C_in, C_out] -> [B, H', W', C_out], lax semantics.

    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)); `dilation` is the kernel's
    (lax's rhs_dilation); the result has `preferred_element_type` (default: the operands')."""
    strides = tuple(int(s) for s in strides)
    dilation = tuple(int(d) for d in dilation)
    if isinstance(padding, str):
        span = [(k - 1) * d + 1 for k, d in zip(w.shape[:2], dilation, strict=True)]
        padding = lax.padtype_to_pads(x.shape[1:3], span, strides, padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv2d(x, w, strides, padding, dilation, preferred_element_type)


def convolve(
    x: jax.Array,
    w: jax.Array,
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    preferred_element_type: Any,
    dilation: Sequence[int],
    kernels: str,
) -> jax.Array:
    """`conv2d` with the 'cpu' kernels, lax's own convolution (and gradient) with 'xla'."""
    if kernels == "cpu":
        return conv2d(x, w, strides, padding, preferred_element_type, dilation)
    return lax.conv_general_dilated(
        x,
        w,
        tuple(strides),
        padding if isinstance(padding, str) else tuple(tuple(p) for p in padding),
        rhs_dilation=tuple(dilation),
        dimension_numbers=_NHWC,
        preferred_element_type=preferred_element_type,
    )


class Conv(nn.Module):
    """`flax.linen.Conv` for NHWC images: same parameters (kernel HWIO, bias), initialisers and
    dtype promotion. With kernels='cpu' (models/kernels.py) the backward pass is `conv2d`'s and
    the bias gradient one GEMV; with 'xla' both are lax's own.

    `dtype`: the operands' dtype (None: promote input and kernel); `out_dtype`: the convolution's
    result dtype (float32 keeps bfloat16 operands' results in float32; None: the operands').
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "SAME"
    kernel_dilation: Sequence[int] = (1, 1)
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Any = None
    out_dtype: Any = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"Conv expects NHWC images [B, H, W, C], got shape {x.shape}")
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        dtype = self.dtype or jnp.result_type(x.dtype, kernel.dtype)
        y = convolve(
            x.astype(dtype),
            kernel.astype(dtype),
            self.strides,
            self.padding,
            self.out_dtype,
            self.kernel_dilation,
            self.kernels,
        )
        if not self.use_bias:
            return y
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        bias = bias.astype(dtype)
        return sums.add_bias(y, bias) if self.kernels == "cpu" else y + bias
