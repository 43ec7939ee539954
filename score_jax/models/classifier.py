"""A noise-conditional Wide-ResNet classifier p_t(y | x) for class-conditional sampling.

The architecture of the paper's CIFAR-10 classifier (Song et al. 2021, App. I.1; official
`wideresnet_noise_conditional.py`): per-image standardisation, a Gaussian Fourier embedding of
log(noise std) (128 features, scale 16) and two dense layers to a 512-wide time embedding that
is added inside every residual block, three groups of `blocks_per_group` pre-activation blocks
with 16, 32, 64 times `channel_multiplier` channels (strides 1, 2, 2) and GroupNorm, global
average pooling and a dense layer to `num_classes` logits. The official CIFAR-10 run is WRN-28-10
(blocks_per_group=4, channel_multiplier=10); every size comes from `config.classifier`, read by
`get_classifier`; with config.model.dtype='bfloat16' the convolutions and dense layers take
bfloat16 operands and return float32, as the score networks do.

    model = get_classifier(config)
    logits = model.apply(variables, x_nhwc, std, train=False)    # std: noise std [B]
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from score_jax.models import compute_dtype
from score_jax.models.layers import dot_f32_out
from score_jax.sde import SDE

# He-normal with fan-out, as the official WRN's convolution kernels.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# The official time conditioning is log(std); the smallest std (VP at t -> 0 is 0) is clamped.
MIN_STD = 1e-4
_conv_f32_out = functools.partial(jax.lax.conv_general_dilated, preferred_element_type=jnp.float32)


def _conv(features: int, dtype: Any, stride: int = 1, name: str | None = None) -> nn.Conv:
    """3x3 'SAME' convolution without bias, He-normal (fan-out), float32 result."""
    return nn.Conv(
        features,
        (3, 3),
        (stride, stride),
        padding="SAME",
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        conv_general_dilated=_conv_f32_out,
        name=name,
    )


def _dense(features: int, dtype: Any, **kwargs) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, dot_general=dot_f32_out, **kwargs)


def _norm(x: jax.Array, name: str) -> jax.Array:
    return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5, name=name)(x)


def _shortcut(block: jax.Array, orig: jax.Array) -> jax.Array:
    """orig average-pooled to block's size and zero-padded to its channels, added to block."""
    stride = orig.shape[-2] // block.shape[-2]
    if block.shape[-1] != orig.shape[-1]:
        orig = nn.avg_pool(orig, (stride, stride), (stride, stride))
        extra = block.shape[-1] - orig.shape[-1]
        orig = jnp.pad(orig, [(0, 0), (0, 0), (0, 0), (0, extra)])
    return block + orig


class WideResNetBlock(nn.Module):
    """Pre-activation block: norm, relu, conv (+ time embedding), norm, relu, conv, shortcut."""

    channels: int
    stride: int = 1
    activate_before_residual: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        if self.activate_before_residual:
            x = nn.relu(_norm(x, "init_norm"))
            h = x
        else:
            h = nn.relu(_norm(x, "init_norm"))
        h = _conv(self.channels, self.dtype, self.stride, name="conv1")(h)
        h = h + _dense(self.channels, self.dtype, name="temb")(nn.swish(temb))[:, None, None, :]
        h = nn.relu(_norm(h, "norm2"))
        h = _conv(self.channels, self.dtype, name="conv2")(h)
        return _shortcut(h, x)


class GaussianFourierEmbedding(nn.Module):
    """[B] -> [B, 2 size]: sin and cos of 2 pi s W with fixed random W ~ N(0, scale^2)."""

    size: int
    scale: float

    @nn.compact
    def __call__(self, s: jax.Array) -> jax.Array:
        w = self.param("W", nn.initializers.normal(self.scale), (self.size,))
        proj = s[:, None] * jax.lax.stop_gradient(w)[None, :] * 2 * math.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class WideResNetClassifier(nn.Module):
    """logits [B, num_classes] of x [B, H, W, C] perturbed with noise std [B].

    The fields are config.classifier's options of the same names, and config.model.dtype.
    """

    num_classes: int
    blocks_per_group: int = 4
    channel_multiplier: int = 10
    embedding_size: int = 128
    fourier_scale: float = 16.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, std: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch statistics
        size = math.prod(x.shape[1:])
        mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        spread = jnp.maximum(jnp.std(x, axis=(1, 2, 3), keepdims=True), 1.0 / math.sqrt(size))
        x = (x - mean) / spread
        emb, dt = self.embedding_size, self.dtype
        temb = GaussianFourierEmbedding(emb, self.fourier_scale)(jnp.log(jnp.maximum(std, MIN_STD)))
        temb = _dense(4 * emb, dt)(temb)
        temb = _dense(4 * emb, dt)(nn.swish(temb))
        h = _conv(16, dt)(x)
        for group, width in enumerate((16, 32, 64)):
            for i in range(self.blocks_per_group):
                h = WideResNetBlock(
                    width * self.channel_multiplier,
                    stride=2 if group > 0 and i == 0 else 1,
                    activate_before_residual=group == 0 and i == 0,
                    dtype=dt,
                )(h, temb)
        h = nn.relu(_norm(h, "final_norm"))
        h = jnp.mean(h, axis=(1, 2))
        bound = 1.0 / math.sqrt(self.num_classes)
        head_init = nn.initializers.uniform(2 * bound)
        return _dense(self.num_classes, dt, kernel_init=_shift(head_init, -bound))(h)


def _shift(init, offset: float):
    """An initializer drawing from init and adding `offset` (uniform on [-b, b])."""
    return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype) + offset


def get_classifier(config: ml_collections.ConfigDict) -> WideResNetClassifier:
    """The noise-conditional classifier configured by config.classifier."""
    if "classifier" not in config:
        raise ValueError(
            "The config has no 'classifier' section (blocks_per_group, channel_multiplier, "
            "num_classes, ...); use a classifier config such as configs/digits/classifier.py."
        )
    c = config.classifier
    return WideResNetClassifier(
        num_classes=int(c.num_classes),
        blocks_per_group=int(c.blocks_per_group),
        channel_multiplier=int(c.channel_multiplier),
        embedding_size=int(c.embedding_size),
        fourier_scale=float(c.fourier_scale),
        dtype=compute_dtype(config),
    )


def init_classifier(key: jax.Array, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Freshly initialised variables ({'params': ...}) of get_classifier(config)."""
    model = get_classifier(config)
    size, channels = config.data.image_size, config.data.num_channels
    x = jnp.zeros((1, size, size, channels), jnp.float32)
    return dict(jax.jit(lambda k: model.init(k, x, jnp.ones((1,)), train=False))(key))


def noise_std(sde: SDE, t: jax.Array) -> jax.Array:
    """The classifier's conditioning for time t [B]: the perturbation kernel's std [B]."""
    return sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]


def get_logits_fn(sde: SDE, model: nn.Module, params: Any):
    """logits_fn(x [B, H, W, C], t [B]) -> logits [B, K] with fixed parameters, for
    `controllable.class_log_likelihood`."""

    def logits_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return model.apply({"params": params}, x, noise_std(sde, t), train=False)

    return logits_fn
