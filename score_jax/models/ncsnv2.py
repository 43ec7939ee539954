"""NCSNv2 score networks (Song & Ermon, 2020) for 32-64, 96-128 and 129-256 pixel images; NHWC.

A RefineNet: a stack of pre-activation ResNet blocks with InstanceNorm++ (some halving the
resolution, the deepest ones dilated instead), then RefineBlocks that fuse each level with the
refined deeper one (bilinear upsampling with aligned corners, chained max-pool residual
pooling). The network is not conditioned on the noise level: it returns its output divided by
sigmas[labels], the SMLD noise levels in descending order.

Dilated convs are padded by their dilation, as in the NCSNv2 code that trained the official
checkpoints (score_sde_pytorch pads them by 1, which cannot run: its shapes do not line up).
`models.get_model` reads the config and sets the fields.
Submodule and parameter names follow the official state_dict (`res2_0/conv2/conv`,
`refine1/adapt_convs_0/1_1_conv`, ...), with list indices joined by '_'. With
model.dtype='bfloat16' the convolutions take bfloat16 operands and return float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models.kernels import ModuleDef
from score_jax.models.layers import divide_by_sigma, smld_sigmas

# Mixed precision: convolutions take `dtype` (bfloat16) operands but accumulate and return
# float32 (the conv's out_dtype), so norms, residual sums, pooling and resizing run in float32.
# Every block receives `conv`, the network's Kernels.conv (models/kernels.py).


class Stage(NamedTuple):
    """One level of the encoder: two ResidualBlocks, and the RefineBlock that decodes it."""

    name: str  # official ModuleList name, e.g. 'res2'
    mult: int  # channels = mult * nf
    dilation: int | None  # None: plain 3x3 convs; the first block of a later stage halves H, W
    refine: str  # official name of the RefineBlock that consumes this level


def torch_default_conv(
    conv: ModuleDef,
    features: int,
    kernel: int,
    in_ch: int,
    name: str,
    dtype,
    dilation: int = 1,
    bias: bool = True,
) -> nn.Module:
    """Conv with PyTorch's default Conv2d init (weight and bias U(+-1/sqrt(fan_in))), 'SAME'."""
    bound = 1.0 / math.sqrt(in_ch * kernel * kernel)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    pad = dilation * (kernel // 2)
    return conv(
        features,
        (kernel, kernel),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=bias,
        kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=bias_init,
        dtype=dtype,
        out_dtype=jnp.float32,
        name=name,
    )


def normal_around_one(key, shape, dtype=jnp.float32):
    """N(1, 0.02^2), the official init of the InstanceNorm++ scales."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class InstanceNormPlus(nn.Module):
    """InstanceNorm++: instance norm (eps 1e-5) plus alpha * standardised per-channel means.

    Always computed and returned in float32, whatever the compute dtype of the convolutions.
    """

    bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        alpha = self.param("alpha", normal_around_one, (c,))
        gamma = self.param("gamma", normal_around_one, (c,))
        x32 = x.astype(jnp.float32)
        means = x32.mean(axis=(1, 2))  # [B, C]
        # The spread of the channel means uses the unbiased variance, as torch.var does.
        m = means.mean(axis=-1, keepdims=True)
        v = means.var(axis=-1, ddof=1, keepdims=True)
        scaled_means = (means - m) / jnp.sqrt(v + 1e-5)
        var = x32.var(axis=(1, 2), keepdims=True)
        h = (x32 - means[:, None, None, :]) / jnp.sqrt(var + 1e-5)
        h = gamma * (h + scaled_means[:, None, None, :] * alpha)
        if self.bias:
            h = h + self.param("beta", nn.initializers.zeros, (c,))
        return h


class ConvMeanPool(nn.Module):
    """A 'SAME' conv followed by 2x2 mean pooling (the official ConvMeanPool, submodule 'conv')."""

    features: int
    kernel: int
    conv: ModuleDef
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = torch_default_conv(
            self.conv, self.features, self.kernel, x.shape[-1], "conv", self.dtype
        )
        h = conv(x)
        b, height, width, c = h.shape
        return h.reshape(b, height // 2, 2, width // 2, 2, c).mean(axis=(2, 4))


class ResidualBlock(nn.Module):
    """Pre-activation block: norm-act-conv1, norm-act-conv2, plus a (conv) shortcut.

    resample='down' without dilation halves H and W (conv + mean pool); with a dilation it keeps
    the resolution and uses dilated convs, as the official code does.
    """

    out_ch: int
    act: Callable[[jax.Array], jax.Array]
    conv: ModuleDef
    resample: str | None = None
    dilation: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch, dt, conv = x.shape[-1], self.dtype, self.conv
        dil = self.dilation or 1
        down = self.resample == "down"
        mid_ch = in_ch if down else self.out_ch
        h = self.act(InstanceNormPlus(name="normalize1")(x))
        h = torch_default_conv(conv, mid_ch, 3, in_ch, "conv1", dt, dilation=dil)(h)
        h = self.act(InstanceNormPlus(name="normalize2")(h))
        if down and self.dilation is None:
            h = ConvMeanPool(self.out_ch, 3, conv, dt, name="conv2")(h)
            return ConvMeanPool(self.out_ch, 1, conv, dt, name="shortcut")(x) + h
        h = torch_default_conv(conv, self.out_ch, 3, mid_ch, "conv2", dt, dilation=dil)(h)
        if in_ch == self.out_ch and not down:
            return x + h
        kernel = 1 if self.dilation is None else 3
        shortcut = torch_default_conv(
            conv, self.out_ch, kernel, in_ch, "shortcut", dt, dilation=dil
        )
        return shortcut(x) + h


class RCUBlock(nn.Module):
    """Residual conv units: n_blocks times x += conv(act(conv(act(x)))), convs without bias."""

    n_blocks: int
    act: Callable[[jax.Array], jax.Array]
    conv: ModuleDef
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in (1, 2):
                conv = torch_default_conv(
                    self.conv, c, 3, c, f"{i}_{j}_conv", self.dtype, bias=False
                )
                x = conv(self.act(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: act, then twice path = conv(maxpool5x5(path)); x += path."""

    act: Callable[[jax.Array], jax.Array]
    conv: ModuleDef
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = self.act(x)
        path = x
        for i in range(2):
            path = nn.max_pool(path, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))
            conv = torch_default_conv(self.conv, c, 3, c, f"convs_{i}", self.dtype, bias=False)
            path = conv(path)
            x = path + x
        return x


def align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation weights, corners aligned (torch align_corners=True)."""
    weights = np.zeros((n_out, n_in), np.float32)
    if n_in == 1 or n_out == 1:
        weights[:, 0] = 1.0
        return weights
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    np.add.at(weights, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), lo + 1), frac)
    return weights


def resize_bilinear_aligned(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of NHWC x with aligned corners, as two small matmuls (no gathers)."""
    if x.shape[1:3] == (height, width):
        return x
    rows = jnp.asarray(align_corners_matrix(height, x.shape[1]), x.dtype)
    cols = jnp.asarray(align_corners_matrix(width, x.shape[2]), x.dtype)
    x = jnp.einsum("oh,bhwc->bowc", rows, x)
    return jnp.einsum("pw,bowc->bopc", cols, x)


class MSFBlock(nn.Module):
    """Multi-resolution fusion: a biased 3x3 conv per input, resized to `shape`, summed."""

    features: int
    conv: ModuleDef
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], shape: tuple[int, int]) -> jax.Array:
        total = 0.0
        for i, x in enumerate(xs):
            conv = torch_default_conv(
                self.conv, self.features, 3, x.shape[-1], f"convs_{i}", self.dtype
            )
            total = total + resize_bilinear_aligned(conv(x), *shape)
        return total


class RefineBlock(nn.Module):
    """RefineNet block: RCU-adapt each input, fuse (conv + upsample + sum), CRP, RCU output."""

    features: int
    act: Callable[[jax.Array], jax.Array]
    conv: ModuleDef
    start: bool = False
    end: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], shape: tuple[int, int]) -> jax.Array:
        act, conv, dt = self.act, self.conv, self.dtype
        hs = [RCUBlock(2, act, conv, dt, name=f"adapt_convs_{i}")(x) for i, x in enumerate(xs)]
        h = MSFBlock(self.features, conv, dt, name="msf")(hs, shape) if len(hs) > 1 else hs[0]
        h = CRPBlock(act, conv, dt, name="crp")(h)
        return RCUBlock(3 if self.end else 1, act, conv, dt, name="output_convs")(h)


def _encoder(net: NCSNv2, h: jax.Array) -> list[jax.Array]:
    """The two ResidualBlocks of every stage: each stage's output, shallowest first."""
    # remat recomputes each ResidualBlock in the backward pass; names are unchanged.
    block_cls = nn.remat(ResidualBlock) if net.remat else ResidualBlock
    levels = []
    for index, stage in enumerate(net.STAGES):
        for block in range(2):
            resample = "down" if index > 0 and block == 0 else None
            name = f"{stage.name}_{block}"
            h = block_cls(
                stage.mult * net.nf,
                net.act,
                net.conv,
                resample,
                stage.dilation,
                net.dtype,
                name=name,
            )(h)
        levels.append(h)
    return levels


def _decoder(net: NCSNv2, levels: list[jax.Array]) -> jax.Array:
    """The RefineBlocks, from the deepest level up: the refined top level."""
    refined = None
    for index in reversed(range(len(net.STAGES))):
        features = net.nf * (net.STAGES[index - 1].mult if index > 0 else 1)
        inputs = [levels[index]] if refined is None else [levels[index], refined]
        block = RefineBlock(
            features,
            net.act,
            net.conv,
            refined is None,
            index == 0,
            net.dtype,
            name=net.STAGES[index].refine,
        )
        refined = block(inputs, levels[index].shape[1:3])
    return refined


class NCSNv2(nn.Module):
    """Base of the NCSNv2 family: (x [B, H, W, C], integer labels [B]) -> score [B, H, W, C].

    The output is divided by the SMLD noise levels (sigma_min, sigma_max, num_scales) at the
    labels; `conv` is the network's Kernels.conv; the fields are config.model's options.
    """

    conv: ModuleDef
    act: Callable[[jax.Array], jax.Array] = nn.elu
    nf: int = 128
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 232
    centered: bool = False
    remat: bool = False
    dtype: Any = jnp.float32
    STAGES: ClassVar[tuple[Stage, ...]] = ()

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        dt, nf, channels = self.dtype, self.nf, x.shape[-1]
        h = x if self.centered else 2 * x - 1.0
        h = torch_default_conv(self.conv, nf, 3, channels, "begin_conv", dt)(h.astype(dt))
        refined = _decoder(self, _encoder(self, h))
        h = self.act(InstanceNormPlus(name="normalizer")(refined))
        h = torch_default_conv(self.conv, channels, 3, nf, "end_conv", dt)(h)
        sigmas = smld_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
        return divide_by_sigma(h.astype(jnp.float32), labels, sigmas)


class NCSNv2_64(NCSNv2):  # noqa: N801 -- official model name
    """For images below 96 pixels: four levels, the last two dilated (2, 4) at 1/2 resolution."""

    STAGES: ClassVar[tuple[Stage, ...]] = (
        Stage("res1", 1, None, "refine4"),
        Stage("res2", 2, None, "refine3"),
        Stage("res3", 2, 2, "refine2"),
        Stage("res4", 2, 4, "refine1"),
    )


class NCSNv2_128(NCSNv2):  # noqa: N801
    """For 96-128 pixels: five levels, widths nf, 2nf, 2nf, 4nf, 4nf; the last two dilated."""

    STAGES: ClassVar[tuple[Stage, ...]] = (
        Stage("res1", 1, None, "refine5"),
        Stage("res2", 2, None, "refine4"),
        Stage("res3", 2, None, "refine3"),
        Stage("res4", 4, 2, "refine2"),
        Stage("res5", 4, 4, "refine1"),
    )


class NCSNv2_256(NCSNv2):  # noqa: N801
    """For 129-256 pixels: the 128 network with one more halving level, 'res31'."""

    STAGES: ClassVar[tuple[Stage, ...]] = (
        Stage("res1", 1, None, "refine5"),
        Stage("res2", 2, None, "refine4"),
        Stage("res3", 2, None, "refine3"),
        Stage("res31", 2, None, "refine31"),
        Stage("res4", 4, 2, "refine2"),
        Stage("res5", 4, 4, "refine1"),
    )
