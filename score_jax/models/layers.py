"""Building blocks shared by the score networks (NHWC, Flax Linen).

Initialisation follows the official code: `default_init` is DDPM's variance scaling (fan_avg,
uniform) with scale 0 replaced by 1e-10, so "zero-initialised" output layers stay trainable.
Every block takes `dtype`, the compute dtype of its activations; parameters are always float32.
Sub-module names equal the official ones (GroupNorm_0, Conv_0, Dense_0, NIN_0, ...) so official
weights map onto them by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import conv, norm, upfirdn
from score_jax.models import kernels as kernel_choice
from score_jax.models.dropout import Dropout

Dtype = Any
Initializer = Callable[..., jax.Array]
_SQRT2 = np.sqrt(2.0)

# Mixed precision: convolutions and matmuls take `dtype` operands (bfloat16 on accelerators) but
# accumulate and return float32, so normalisation, residual sums and the time embedding stay in
# float32. Casting only the operands keeps a whole network within ~1e-2 of float32.
# The convolutions are models.conv.Conv, whose gradients stay fast inside XLA:CPU loops.
_dot_f32_out = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)


def default_init(scale: float = 1.0) -> Initializer:
    """DDPM initialisation: variance scaling, fan_avg, uniform; scale 0 becomes 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def get_act(config) -> Callable[[jax.Array], jax.Array]:
    """The activation named by config.model.nonlinearity."""
    name = config.model.nonlinearity.lower()
    acts = {"swish": nn.silu, "silu": nn.silu, "elu": nn.elu, "relu": nn.relu}
    if name == "lrelu":
        return lambda x: nn.leaky_relu(x, negative_slope=0.2)
    if name not in acts:
        raise ValueError(
            f"config.model.nonlinearity must be one of {sorted([*acts, 'lrelu'])}, got {name!r}"
        )
    return acts[name]


def conv3x3(
    features: int,
    init_scale: float = 1.0,
    stride: int = 1,
    padding: Any = ((1, 1), (1, 1)),
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    kernels: str = "xla",
) -> conv.Conv:
    """3x3 convolution with DDPM initialisation and zero bias ('SAME' padding by default)."""
    return conv.Conv(
        features,
        (3, 3),
        strides=(stride, stride),
        padding=padding,
        kernel_init=default_init(init_scale),
        dtype=dtype,
        out_dtype=jnp.float32,
        kernels=kernels,
        name=name,
    )


def conv1x1(
    features: int,
    init_scale: float = 1.0,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    kernels: str = "xla",
) -> conv.Conv:
    """1x1 convolution with DDPM initialisation and zero bias."""
    return conv.Conv(
        features,
        (1, 1),
        padding="VALID",
        kernel_init=default_init(init_scale),
        dtype=dtype,
        kernels=kernels,
        name=name,
    )


def dense(features: int, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Dense:
    """Linear layer with DDPM initialisation and zero bias."""
    return nn.Dense(
        features, kernel_init=default_init(), dtype=dtype, dot_general=_dot_f32_out, name=name
    )


def group_norm(
    channels: int,
    num_groups: int | None = None,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    kernels: str = "xla",
) -> nn.Module:
    """GroupNorm with eps 1e-6; groups default to NCSN++'s min(C // 4, 32).

    Always float32 (two-pass variance, like PyTorch); `dtype` is accepted for a uniform API.
    norm.GroupNorm with kernels='cpu', flax's nn.GroupNorm otherwise (same parameters).
    """
    del dtype
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    if kernels == "cpu":
        return norm.GroupNorm(num_groups=groups, epsilon=1e-6, name=name)
    return nn.GroupNorm(
        num_groups=groups, epsilon=1e-6, dtype=jnp.float32, use_fast_variance=False, name=name
    )


class NIN(nn.Module):
    """Per-pixel linear map over channels: x [..., C_in] @ W [C_in, C_out] + b."""

    features: int
    init_scale: float = 0.1
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.features))
        b = self.param("b", nn.initializers.zeros, (self.features,))
        y = jnp.einsum(
            "...c,cd->...d",
            x.astype(self.dtype),
            w.astype(self.dtype),
            preferred_element_type=jnp.float32,
        )
        return kernel_choice.add_bias(y, b, self.kernels)


def get_timestep_embedding(
    timesteps: jax.Array, embedding_dim: int, max_positions: int = 10000
) -> jax.Array:
    """Sinusoidal embedding [B] -> [B, embedding_dim]: cat[sin(t f), cos(t f)], zero-padded if odd.

    Frequencies f_i = exp(-i ln(max_positions) / (half - 1)), i < half = embedding_dim // 2.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape [B], got {timesteps.shape}")
    half = embedding_dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -step)
    emb = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log-sigma [B] -> [B, 2 * embedding_size].

    W ~ N(0, scale^2) is a parameter kept out of the gradient (stop_gradient), as the official
    JAX code; the phase is evaluated as ((x W) 2) pi in float32, the official order.
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        w = jax.lax.stop_gradient(w)
        x_proj = x.astype(jnp.float32)[:, None] * w[None, :] * 2 * np.float32(np.pi)
        return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


class Combine(nn.Module):
    """Merges a skip input x into y: conv1x1(x) then concatenate ('cat') or add ('sum')."""

    method: str = "cat"
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = conv1x1(y.shape[-1], dtype=self.dtype, kernels=self.kernels, name="Conv_0")(x)
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"progressive_combine must be 'cat' or 'sum', got {self.method!r}")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, dtype: Dtype = jnp.float32) -> jax.Array:
    """Softmax attention of every pixel over all H*W pixels; q, k, v [B, H, W, C] -> float32."""
    b, h, w, c = q.shape
    q2, k2, v2 = (t.reshape(b, h * w, c).astype(dtype) for t in (q, k, v))
    logits = jnp.einsum("bqc,bkc->bqk", q2, k2, preferred_element_type=jnp.float32) * (c**-0.5)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = jnp.einsum("bqk,bkc->bqc", weights, v2, preferred_element_type=jnp.float32)
    return out.reshape(b, h, w, c)


class AttnBlockpp(nn.Module):
    """Self-attention residual block of NCSN++: x + NIN_3(attn(NIN q, k, v of GN(x)))."""

    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = group_norm(c, dtype=self.dtype, kernels=self.kernels, name="GroupNorm_0")(x)
        q = NIN(c, dtype=self.dtype, kernels=self.kernels, name="NIN_0")(h)
        k = NIN(c, dtype=self.dtype, kernels=self.kernels, name="NIN_1")(h)
        v = NIN(c, dtype=self.dtype, kernels=self.kernels, name="NIN_2")(h)
        h = attention(q, k, v, self.dtype)
        h = NIN(
            c, init_scale=self.init_scale, dtype=self.dtype, kernels=self.kernels, name="NIN_3"
        )(h)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class FIRConv2d(nn.Module):
    """Conv (kernel x kernel, weights HWIO) fused with FIR up- or down-sampling, plus bias."""

    features: int
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: Sequence[int] = (1, 3, 3, 1)
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        w = self.param("kernel", default_init(), shape)
        if self.up:
            x = upfirdn.upsample_conv_2d(
                x, w, self.resample_kernel, dtype=self.dtype, kernels=self.kernels
            )
        elif self.down:
            x = upfirdn.conv_downsample_2d(
                x, w, self.resample_kernel, dtype=self.dtype, kernels=self.kernels
            )
        else:
            pad = self.kernel // 2
            x = upfirdn.conv2d(x, w, 1, ((pad, pad), (pad, pad)), self.dtype, self.kernels)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            x = kernel_choice.add_bias(x, bias, self.kernels)
        return x


class Upsample(nn.Module):
    """x2 upsampling: nearest (+ conv3x3 'Conv_0') or FIR (fused conv 'Conv2d_0')."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = upfirdn.naive_upsample_2d(x, 2)
            return (
                conv3x3(out_ch, dtype=self.dtype, kernels=self.kernels, name="Conv_0")(h)
                if self.with_conv
                else h
            )
        if not self.with_conv:
            return upfirdn.upsample_2d(x, self.fir_kernel, factor=2)
        return FIRConv2d(
            out_ch,
            up=True,
            resample_kernel=self.fir_kernel,
            dtype=self.dtype,
            kernels=self.kernels,
            name="Conv2d_0",
        )(x)


class Downsample(nn.Module):
    """/2 downsampling: mean pool or TF-'SAME' stride-2 conv3x3, or FIR (fused conv 'Conv2d_0')."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if not self.with_conv:
                return upfirdn.naive_downsample_2d(x, 2)
            # Official: pad (0, 1) on each spatial side, then a VALID stride-2 conv.
            pad = ((0, 1), (0, 1))
            return conv3x3(
                out_ch, stride=2, padding=pad, dtype=self.dtype, kernels=self.kernels, name="Conv_0"
            )(x)
        if not self.with_conv:
            return upfirdn.downsample_2d(x, self.fir_kernel, factor=2)
        return FIRConv2d(
            out_ch,
            down=True,
            resample_kernel=self.fir_kernel,
            dtype=self.dtype,
            kernels=self.kernels,
            name="Conv2d_0",
        )(x)


def _add_temb(h: jax.Array, temb: jax.Array | None, act, dtype: Dtype, kernels: str) -> jax.Array:
    """h + Dense_0(act(temb)) broadcast over the pixels (no-op without temb)."""
    if temb is None:
        return h
    emb = dense(h.shape[-1], dtype=dtype, name="Dense_0")(act(temb))
    return kernel_choice.add_per_example(h, emb, kernels)


def _second_half(block: nn.Module, h: jax.Array, temb, out_ch: int, train: bool) -> jax.Array:
    """The residual branch of both NCSN++ blocks after Conv_0: + Dense_0(act(temb)),
    GroupNorm_1, act, Dropout_0, Conv_1 (init_scale). Called inside the block's compact
    __call__, so the submodules are the block's own (official names)."""
    dtype, kernels = block.dtype, block.kernels
    h = _add_temb(h, temb, block.act, dtype, kernels)
    h = block.act(group_norm(out_ch, dtype=dtype, kernels=kernels, name="GroupNorm_1")(h))
    h = Dropout(block.dropout, kernels=kernels, name="Dropout_0")(h, deterministic=not train)
    conv = conv3x3(out_ch, init_scale=block.init_scale, dtype=dtype, kernels=kernels, name="Conv_1")
    return conv(h)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block with NCSN++ GroupNorm groups, optional skip rescaling by 1/sqrt(2)."""

    act: Callable[[jax.Array], jax.Array]
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None, train: bool = True):
        in_ch = x.shape[-1]
        out_ch = self.out_ch or in_ch
        h = self.act(
            group_norm(in_ch, dtype=self.dtype, kernels=self.kernels, name="GroupNorm_0")(x)
        )
        h = conv3x3(out_ch, dtype=self.dtype, kernels=self.kernels, name="Conv_0")(h)
        h = _second_half(self, h, temb, out_ch, train)
        if in_ch != out_ch:
            if self.conv_shortcut:
                x = conv3x3(out_ch, dtype=self.dtype, kernels=self.kernels, name="Conv_2")(x)
            else:
                x = NIN(out_ch, dtype=self.dtype, kernels=self.kernels, name="NIN_0")(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block: optional up/down-sampling (FIR or naive) of both branches."""

    act: Callable[[jax.Array], jax.Array]
    out_ch: int | None = None
    up: bool = False
    down: bool = False
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32
    kernels: str = "xla"

    def _resample(self, x: jax.Array) -> jax.Array:
        if self.up:
            if self.fir:
                return upfirdn.upsample_2d(x, self.fir_kernel, factor=2)
            return upfirdn.naive_upsample_2d(x, factor=2)
        if self.down:
            if self.fir:
                return upfirdn.downsample_2d(x, self.fir_kernel, factor=2)
            return upfirdn.naive_downsample_2d(x, factor=2)
        return x

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None, train: bool = True):
        in_ch = x.shape[-1]
        out_ch = self.out_ch or in_ch
        h = self.act(
            group_norm(in_ch, dtype=self.dtype, kernels=self.kernels, name="GroupNorm_0")(x)
        )
        h = self._resample(h)
        x = self._resample(x)
        h = conv3x3(out_ch, dtype=self.dtype, kernels=self.kernels, name="Conv_0")(h)
        h = _second_half(self, h, temb, out_ch, train)
        if in_ch != out_ch or self.up or self.down:
            x = conv1x1(out_ch, dtype=self.dtype, kernels=self.kernels, name="Conv_2")(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h
