"""Building blocks shared by the score networks (NHWC, Flax Linen).

Initialisation follows the official code: `default_init` is DDPM's variance scaling (fan_avg,
uniform) with scale 0 replaced by 1e-10, so "zero-initialised" output layers stay trainable.
Every block takes `dtype`, the compute dtype of its activations (parameters are always float32),
and `kernels`, the network's primitive ops (conv, norm, dropout, bias adds; models/kernels.py).
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

from score_jax.models import upfirdn
from score_jax.models.kernels import Kernels, ModuleDef

Dtype = Any
Initializer = Callable[..., jax.Array]
_SQRT2 = np.sqrt(2.0)

# Mixed precision: convolutions and matmuls take `dtype` operands (bfloat16 on accelerators) but
# accumulate and return float32, so normalisation, residual sums and the time embedding stay in
# float32. Casting only the operands keeps a whole network within ~1e-2 of float32.
# The convolutions are models.conv.Conv with the network's kernel choice (models/kernels.py).
dot_f32_out = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)


def default_init(scale: float = 1.0) -> Initializer:
    """DDPM initialisation: variance scaling, fan_avg, uniform; scale 0 becomes 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def smld_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> np.ndarray:
    """The official SMLD noise levels [num_scales]: geometric from sigma_max down to sigma_min."""
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))


def divide_by_sigma(h: jax.Array, labels: jax.Array, sigmas: np.ndarray) -> jax.Array:
    """h [B, ...] / sigmas[labels], the official scale_by_sigma for integer (SMLD) labels [B]."""
    table = jnp.asarray(sigmas, dtype=jnp.float32)
    index = labels if jnp.issubdtype(labels.dtype, jnp.integer) else labels.astype(jnp.int32)
    return h / table[index].reshape((-1,) + (1,) * (h.ndim - 1))


def _lrelu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, negative_slope=0.2)


# The official config.model.nonlinearity names.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "swish": nn.silu,
    "silu": nn.silu,
    "elu": nn.elu,
    "relu": nn.relu,
    "lrelu": _lrelu,
}


def conv3x3(
    conv: ModuleDef,
    features: int,
    init_scale: float = 1.0,
    stride: int = 1,
    padding: Any = ((1, 1), (1, 1)),
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Module:
    """3x3 `conv` (a Kernels.conv) with DDPM initialisation, zero bias and a float32 result."""
    return conv(
        features,
        (3, 3),
        strides=(stride, stride),
        padding=padding,
        kernel_init=default_init(init_scale),
        dtype=dtype,
        out_dtype=jnp.float32,
        name=name,
    )


def conv1x1(
    conv: ModuleDef,
    features: int,
    init_scale: float = 1.0,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Module:
    """1x1 `conv` (a Kernels.conv) with DDPM initialisation and zero bias."""
    return conv(
        features,
        (1, 1),
        padding="VALID",
        kernel_init=default_init(init_scale),
        dtype=dtype,
        name=name,
    )


def dense(features: int, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Dense:
    """Linear layer with DDPM initialisation and zero bias."""
    return nn.Dense(
        features, kernel_init=default_init(), dtype=dtype, dot_general=dot_f32_out, name=name
    )


def group_norm(
    norm: ModuleDef, channels: int, num_groups: int | None = None, name: str | None = None
) -> nn.Module:
    """`norm` (a Kernels.norm: float32, two-pass variance, like PyTorch) with eps 1e-6; groups
    default to NCSN++'s min(C // 4, 32)."""
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    return norm(num_groups=groups, epsilon=1e-6, name=name)


class NIN(nn.Module):
    """Per-pixel linear map over channels: x [..., C_in] @ W [C_in, C_out] + b."""

    features: int
    kernels: Kernels
    init_scale: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.features))
        b = self.param("b", nn.initializers.zeros, (self.features,))
        # One [pixels, C_in] @ [C_in, C_out] product. Contracting "...c,cd->...d" over the
        # batch and pixel axes instead left XLA:CPU to transpose the output cotangent for the
        # weight gradient, in a copy that fused the backward chain (config P: 458 vs 432 ms).
        rows = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        y = jnp.dot(rows, w.astype(self.dtype), preferred_element_type=jnp.float32)
        return self.kernels.add_bias(y.reshape(*x.shape[:-1], self.features), b)


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

    kernels: Kernels
    method: str = "cat"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = conv1x1(self.kernels.conv, y.shape[-1], dtype=self.dtype, name="Conv_0")(x)
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

    kernels: Kernels
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, kn, dt = x.shape[-1], self.kernels, self.dtype
        h = group_norm(kn.norm, c, name="GroupNorm_0")(x)
        q, k, v = (NIN(c, kn, dtype=dt, name=f"NIN_{i}")(h) for i in range(3))
        h = attention(q, k, v, dt)
        h = NIN(c, kn, init_scale=self.init_scale, dtype=dt, name="NIN_3")(h)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class FIRConv2d(nn.Module):
    """Conv (kernel x kernel, weights HWIO) fused with FIR up- or down-sampling, plus bias."""

    features: int
    kernels: Kernels
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: Sequence[int] = (1, 3, 3, 1)
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        w = self.param("kernel", default_init(), shape)
        fused = dict(dtype=self.dtype, kernels=self.kernels.name)
        if self.up:
            x = upfirdn.upsample_conv_2d(x, w, self.resample_kernel, **fused)
        elif self.down:
            x = upfirdn.conv_downsample_2d(x, w, self.resample_kernel, **fused)
        else:
            pad = self.kernel // 2
            x = upfirdn.conv2d(x, w, 1, ((pad, pad), (pad, pad)), **fused)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            x = self.kernels.add_bias(x, bias)
        return x


class Upsample(nn.Module):
    """x2 upsampling: nearest (+ conv3x3 'Conv_0') or FIR (fused conv 'Conv2d_0')."""

    kernels: Kernels
    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = upfirdn.naive_upsample_2d(x, 2)
            if not self.with_conv:
                return h
            return conv3x3(self.kernels.conv, out_ch, dtype=self.dtype, name="Conv_0")(h)
        if not self.with_conv:
            return upfirdn.upsample_2d(x, self.fir_kernel, factor=2)
        return FIRConv2d(
            out_ch,
            self.kernels,
            up=True,
            resample_kernel=self.fir_kernel,
            dtype=self.dtype,
            name="Conv2d_0",
        )(x)


class Downsample(nn.Module):
    """/2 downsampling: mean pool or TF-'SAME' stride-2 conv3x3, or FIR (fused conv 'Conv2d_0')."""

    kernels: Kernels
    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if not self.with_conv:
                return upfirdn.naive_downsample_2d(x, 2)
            # Official: pad (0, 1) on each spatial side, then a VALID stride-2 conv.
            pad = ((0, 1), (0, 1))
            conv = conv3x3(
                self.kernels.conv, out_ch, stride=2, padding=pad, dtype=self.dtype, name="Conv_0"
            )
            return conv(x)
        if not self.with_conv:
            return upfirdn.downsample_2d(x, self.fir_kernel, factor=2)
        return FIRConv2d(
            out_ch,
            self.kernels,
            down=True,
            resample_kernel=self.fir_kernel,
            dtype=self.dtype,
            name="Conv2d_0",
        )(x)


def add_temb(
    h: jax.Array, temb: jax.Array | None, act, dtype: Dtype, kernels: Kernels
) -> jax.Array:
    """h + Dense_0(act(temb)) broadcast over the pixels (no-op without temb); called inside a
    block's compact __call__, so Dense_0 is the block's own."""
    if temb is None:
        return h
    emb = dense(h.shape[-1], dtype=dtype, name="Dense_0")(act(temb))
    return kernels.add_per_example(h, emb)


def _second_half(block: nn.Module, h: jax.Array, temb, out_ch: int, train: bool) -> jax.Array:
    """The residual branch of both NCSN++ blocks after Conv_0: + Dense_0(act(temb)),
    GroupNorm_1, act, Dropout_0, Conv_1 (init_scale). Called inside the block's compact
    __call__, so the submodules are the block's own (official names)."""
    dtype, kn = block.dtype, block.kernels
    h = add_temb(h, temb, block.act, dtype, kn)
    h = block.act(group_norm(kn.norm, out_ch, name="GroupNorm_1")(h))
    h = kn.dropout(block.dropout, name="Dropout_0")(h, deterministic=not train)
    conv = conv3x3(kn.conv, out_ch, init_scale=block.init_scale, dtype=dtype, name="Conv_1")
    return conv(h)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block with NCSN++ GroupNorm groups, optional skip rescaling by 1/sqrt(2)."""

    act: Callable[[jax.Array], jax.Array]
    kernels: Kernels
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None, train: bool = True):
        in_ch, kn, dt = x.shape[-1], self.kernels, self.dtype
        out_ch = self.out_ch or in_ch
        h = self.act(group_norm(kn.norm, in_ch, name="GroupNorm_0")(x))
        h = conv3x3(kn.conv, out_ch, dtype=dt, name="Conv_0")(h)
        h = _second_half(self, h, temb, out_ch, train)
        if in_ch != out_ch:
            if self.conv_shortcut:
                x = conv3x3(kn.conv, out_ch, dtype=dt, name="Conv_2")(x)
            else:
                x = NIN(out_ch, kn, dtype=dt, name="NIN_0")(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block: optional up/down-sampling (FIR or naive) of both branches."""

    act: Callable[[jax.Array], jax.Array]
    kernels: Kernels
    out_ch: int | None = None
    up: bool = False
    down: bool = False
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

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
        in_ch, kn, dt = x.shape[-1], self.kernels, self.dtype
        out_ch = self.out_ch or in_ch
        h = self.act(group_norm(kn.norm, in_ch, name="GroupNorm_0")(x))
        h = self._resample(h)
        x = self._resample(x)
        h = conv3x3(kn.conv, out_ch, dtype=dt, name="Conv_0")(h)
        h = _second_half(self, h, temb, out_ch, train)
        if in_ch != out_ch or self.up or self.down:
            x = conv1x1(kn.conv, out_ch, dtype=dt, name="Conv_2")(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h
