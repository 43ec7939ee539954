"""A small time-conditioned residual MLP score network for low-dimensional (toy) data.

Input x of any shape [B, ...] is flattened to [B, D]; the output has the shape of x. The noise
label is embedded like NCSN++ does: 'fourier' embeds log(label) (the VE labels are sigma),
'positional' embeds the label itself (VP labels are 999 t). Width is `config.model.nf`, depth
`config.model.num_res_blocks`; with `config.model.scale_by_sigma` the output is divided by the
label (sigma), as NCSN++ does for VE.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from score_jax.models.dropout import Dropout
from score_jax.models.kernels import model_kernels


def sinusoidal_embedding(s: jax.Array, dim: int, max_freq: float, min_freq: float) -> jax.Array:
    """[B] -> [B, dim]: sin and cos of s at `dim // 2` geometrically spaced frequencies."""
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(jnp.log(max_freq), jnp.log(min_freq), half))
    angles = s[:, None].astype(jnp.float32) * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class MLP(nn.Module):
    """Residual MLP s(x, label) -> [B, ...] with a time embedding added in every block."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        m = self.config.model
        width, kernels = int(m.nf), model_kernels(self.config)
        act = nn.silu
        if m.embedding_type == "fourier":
            temb = sinusoidal_embedding(jnp.log(labels), width, 16.0, 1.0 / 16.0)
        elif m.embedding_type == "positional":
            temb = sinusoidal_embedding(labels, width, 1.0, 1.0 / 10000.0)
        else:
            raise ValueError(
                f"config.model.embedding_type must be 'fourier' or 'positional', "
                f"got {m.embedding_type!r}."
            )
        temb = nn.Dense(width)(act(nn.Dense(width)(temb)))

        h = nn.Dense(width)(x.reshape(x.shape[0], -1))
        for _ in range(int(m.num_res_blocks)):
            r = nn.Dense(width)(act(nn.LayerNorm()(h)))
            r = r + nn.Dense(width)(act(temb))
            r = Dropout(float(m.dropout), deterministic=not train, kernels=kernels)(act(r))
            h = h + nn.Dense(width, kernel_init=nn.initializers.zeros)(r)
        out = nn.Dense(x[0].size)(act(nn.LayerNorm()(h)))
        if m.get("scale_by_sigma", False):
            out = out / labels[:, None]
        return out.reshape(x.shape)


def example_input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The [1, ...] input to initialise an MLP with: [1, D] for MIXTURE points, else an image."""
    if config.data.dataset.upper() == "MIXTURE":
        return (1, len(config.data.mixture.means[0]))
    size = config.data.image_size
    return (1, size, size, config.data.num_channels)
