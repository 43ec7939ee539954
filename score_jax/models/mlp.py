"""A small time-conditioned residual MLP score network for low-dimensional (toy) data.

Input x of any shape [B, ...] is flattened to [B, D]; the output has the shape of x. The noise
label is embedded like NCSN++ does: 'fourier' embeds log(label) (the VE labels are sigma),
'positional' embeds the label itself (VP labels are 999 t). Width is `nf` (config.model.nf),
depth `num_res_blocks`; with `scale_by_sigma` the output is divided by the label (sigma), as
NCSN++ does for VE. The dense layers take `dtype` operands and return float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from score_jax.models.kernels import ModuleDef
from score_jax.models.layers import dot_f32_out

EMBEDDINGS = ("fourier", "positional")


def sinusoidal_embedding(s: jax.Array, dim: int, max_freq: float, min_freq: float) -> jax.Array:
    """[B] -> [B, dim]: sin and cos of s at `dim // 2` geometrically spaced frequencies."""
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(jnp.log(max_freq), jnp.log(min_freq), half))
    angles = s[:, None].astype(jnp.float32) * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class MLP(nn.Module):
    """Residual MLP s(x, label) -> [B, ...] with a time embedding added in every block.

    `dropout_cls` is the network's Kernels.dropout (models/kernels.py); `dropout` its rate.
    """

    dropout_cls: ModuleDef
    nf: int = 128
    num_res_blocks: int = 2
    embedding_type: str = "positional"
    dropout: float = 0.0
    scale_by_sigma: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        width, act = self.nf, nn.silu
        dense = functools.partial(nn.Dense, dtype=self.dtype, dot_general=dot_f32_out)
        if self.embedding_type == "fourier":
            temb = sinusoidal_embedding(jnp.log(labels), width, 16.0, 1.0 / 16.0)
        else:
            temb = sinusoidal_embedding(labels, width, 1.0, 1.0 / 10000.0)
        temb = dense(width)(act(dense(width)(temb)))

        h = dense(width)(x.reshape(x.shape[0], -1))
        for _ in range(self.num_res_blocks):
            r = dense(width)(act(nn.LayerNorm()(h)))
            r = r + dense(width)(act(temb))
            r = self.dropout_cls(self.dropout, deterministic=not train)(act(r))
            h = h + dense(width, kernel_init=nn.initializers.zeros)(r)
        out = dense(x[0].size)(act(nn.LayerNorm()(h)))
        if self.scale_by_sigma:
            out = out / labels[:, None]
        return out.reshape(x.shape)


def example_input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The [1, ...] input to initialise an MLP with: [1, D] for MIXTURE points, else an image."""
    if config.data.dataset.upper() == "MIXTURE":
        return (1, len(config.data.mixture.means[0]))
    size = config.data.image_size
    return (1, size, size, config.data.num_channels)
