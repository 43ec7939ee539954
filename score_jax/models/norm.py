"""GroupNorm whose backward pass sums over pixels with matrix products.

Same mathematics, parameters (`scale`, `bias`) and module name as `flax.linen.GroupNorm`
(two-pass variance, float32 statistics). Why a custom backward: differentiating GroupNorm
produces sums over the batch and pixel axes (the scale/bias gradients and the per-group means
of the input gradient), which XLA:CPU computes on its slow loop emitter with the elementwise
backward chain fused in (models/sums.py). Here each is one batched GEMV with a ones vector,
and the elementwise work stays in vectorised loop fusions (config S gradient without YNNPACK:
480 vs 502 ms with flax's GroupNorm, interleaved).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from score_jax.models import sums


def _group_stats(x: jax.Array, groups: int, eps: float) -> tuple[jax.Array, jax.Array]:
    """Mean and 1/std per (example, group) of x [N, H, W, C] (two-pass variance): [N, G] each."""
    n, c = x.shape[0], x.shape[-1]
    xg = x.reshape(n, -1, groups, c // groups)
    mean = jnp.mean(xg, axis=(1, 3))
    var = jnp.mean(jnp.square(xg - mean[:, None, :, None]), axis=(1, 3))
    return mean, lax.rsqrt(var + eps)


def _per_channel(stat: jax.Array, channels: int) -> jax.Array:
    """[N, G] group statistic -> [N, 1, 1, C] broadcastable over an NHWC tensor."""
    n, groups = stat.shape
    per_channel = jnp.broadcast_to(stat[:, :, None], (n, groups, channels // groups))
    return per_channel.reshape(n, 1, 1, channels)


def _normalize(x, scale, bias, groups, eps):
    """(GroupNorm of x, group means, group 1/std)."""
    mean, rstd = _group_stats(x, groups, eps)
    c = x.shape[-1]
    return (x - _per_channel(mean, c)) * _per_channel(rstd, c) * scale + bias, mean, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float):
    """GroupNorm of x [N, H, W, C] (float32) with per-channel scale and bias [C]."""
    return _normalize(x, scale, bias, groups, eps)[0]


def _group_norm_fwd(x, scale, bias, groups, eps):
    y, mean, rstd = _normalize(x, scale, bias, groups, eps)
    return y, (x, mean, rstd, scale)


def _group_norm_bwd(groups, eps, residuals, dy):
    del eps
    x, mean, rstd, scale = residuals
    n, c = x.shape[0], x.shape[-1]
    rstd_c = _per_channel(rstd, c)
    x_hat = (x - _per_channel(mean, c)) * rstd_c
    pixel_sums = sums.sum_pixels(jnp.concatenate([dy * x_hat, dy], axis=-1))
    dy_x_hat, dy_sum = pixel_sums[:, :c], pixel_sums[:, c:]
    group_size = (x.size // n) // groups

    def group_mean(per_channel_sum):  # [N, C] sums of dy * scale (* x_hat) -> [N, G] means
        return jnp.sum((per_channel_sum * scale).reshape(n, groups, -1), axis=-1) / group_size

    dx = rstd_c * (
        dy * scale
        - _per_channel(group_mean(dy_sum), c)
        - x_hat * _per_channel(group_mean(dy_x_hat), c)
    )
    return dx, jnp.sum(dy_x_hat, axis=0), jnp.sum(dy_sum, axis=0)


group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


class GroupNorm(nn.Module):
    """`flax.linen.GroupNorm` over NHWC with float32 statistics and output (same parameters)."""

    num_groups: int
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        if x.ndim != 4 or c % self.num_groups:
            raise ValueError(
                f"GroupNorm needs NHWC input with C divisible by {self.num_groups}, got {x.shape}"
            )
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return group_norm(x.astype(jnp.float32), scale, bias, self.num_groups, self.epsilon)
