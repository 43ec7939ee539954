"""The DDPM score network of Ho et al. (2020), as in the official score_sde code; NHWC Flax Linen.

A U-Net of ResNet blocks with GroupNorm(32 groups), self-attention at the resolutions in
`model.attn_resolutions`, and a sinusoidal embedding of the (float) noise label. Unlike
NCSN++/DDPM++ the blocks never rescale their skip sums.

Submodule names describe the place in the U-Net (`down_1_block_0`, `mid_attn`, ...);
`module_names(config)` lists them in the order of the official `all_modules` list, which is what
the checkpoint converter needs. Inside a block the official names are kept (`GroupNorm_0`,
`Conv_0`, `Dense_0`, `NIN_0`, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_jax.models import kernels as kernel_choice
from score_jax.models.dropout import Dropout
from score_jax.models.kernels import model_kernels
from score_jax.models.layers import (
    NIN,
    Downsample,
    Upsample,
    attention,
    conv3x3,
    dense,
    get_act,
    get_timestep_embedding,
    group_norm,
)

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# DDPM's layers fix the GroupNorm groups (NCSN++ uses min(C // 4, 32) instead).
DDPM_GROUPS = 32


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    """Compute dtype from config.model.dtype ('float32' default); parameters stay float32."""
    name = str(config.model.get("dtype", "float32"))
    if name not in COMPUTE_DTYPES:
        raise ValueError(
            f"config.model.dtype must be one of {sorted(COMPUTE_DTYPES)}, found {name!r}."
        )
    return COMPUTE_DTYPES[name]


def sigma_table(config: ml_collections.ConfigDict) -> np.ndarray:
    """The SMLD noise levels, geometric from sigma_max down to sigma_min (num_scales of them)."""
    m = config.model
    return np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), m.num_scales))


def divide_by_sigma(
    h: jax.Array, labels: jax.Array, config: ml_collections.ConfigDict
) -> jax.Array:
    """h / sigmas[labels], the official scale_by_sigma for integer (discrete SMLD) labels."""
    sigmas = jnp.asarray(sigma_table(config), dtype=jnp.float32)
    index = labels if jnp.issubdtype(labels.dtype, jnp.integer) else labels.astype(jnp.int32)
    return h / sigmas[index][:, None, None, None]


class ResnetBlockDDPM(nn.Module):
    """GN-act-conv, + Dense(act(temb)), GN-act-dropout-conv(zero init), + NIN shortcut if needed."""

    out_ch: int
    act: Callable[[jax.Array], jax.Array]
    dropout: float
    dtype: jnp.dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None, train: bool) -> jax.Array:
        in_ch, out_ch, dt, kn = x.shape[-1], self.out_ch, self.dtype, self.kernels
        h = self.act(group_norm(in_ch, DDPM_GROUPS, dt, name="GroupNorm_0", kernels=kn)(x))
        h = conv3x3(out_ch, dtype=dt, name="Conv_0", kernels=kn)(h)
        if temb is not None:
            emb = dense(out_ch, dt, name="Dense_0")(self.act(temb))
            h = kernel_choice.add_per_example(h, emb, kn)
        h = self.act(group_norm(out_ch, DDPM_GROUPS, dt, name="GroupNorm_1", kernels=kn)(h))
        h = Dropout(self.dropout, deterministic=not train, kernels=kn)(h)
        h = conv3x3(out_ch, init_scale=0.0, dtype=dt, name="Conv_1", kernels=kn)(h)
        if in_ch != out_ch:
            x = NIN(out_ch, dtype=dt, kernels=kn, name="NIN_0")(x)
        return x + h


# model.remat: each block recomputed in the backward pass (train, argument 3, is static); the
# parameter names are unchanged. Built once, not per block.
_RematResnetBlockDDPM = nn.remat(ResnetBlockDDPM, static_argnums=(3,))


class AttnBlock(nn.Module):
    """x + NIN_3(softmax attention over all H*W pixels of NIN q, k, v of GroupNorm(32)(x))."""

    dtype: jnp.dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, dt, kn = x.shape[-1], self.dtype, self.kernels
        h = group_norm(c, DDPM_GROUPS, dt, name="GroupNorm_0", kernels=kn)(x)
        q, k, v = (NIN(c, dtype=dt, kernels=kn, name=f"NIN_{i}")(h) for i in range(3))
        out = NIN(c, init_scale=0.0, dtype=dt, kernels=kn, name="NIN_3")
        return x + out(attention(q, k, v, dt))


def module_names(config: ml_collections.ConfigDict) -> list[str]:
    """Our top-level submodule names in the order of the official DDPM `all_modules` list."""
    m = config.model
    num_levels = len(m.ch_mult)
    resolutions = [config.data.image_size // 2**i for i in range(num_levels)]
    names = ["temb_dense_0", "temb_dense_1"] if m.conditional else []
    names.append("conv_in")
    for level in range(num_levels):
        for block in range(m.num_res_blocks):
            names.append(f"down_{level}_block_{block}")
            if resolutions[level] in m.attn_resolutions:
                names.append(f"down_{level}_attn_{block}")
        if level != num_levels - 1:
            names.append(f"down_{level}_downsample")
    names += ["mid_block_0", "mid_attn", "mid_block_1"]
    for level in reversed(range(num_levels)):
        names += [f"up_{level}_block_{block}" for block in range(m.num_res_blocks + 1)]
        if resolutions[level] in m.attn_resolutions:
            names.append(f"up_{level}_attn")
        if level != 0:
            names.append(f"up_{level}_upsample")
    return names + ["norm_out", "conv_out"]


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What every DDPM block needs: options, compute dtype, kernels, activation, temb, train."""

    config: ml_collections.ConfigDict
    act: Callable[[jax.Array], jax.Array]
    dtype: jnp.dtype
    kernels: str
    temb: jax.Array | None
    train: bool

    def resnet(self, h: jax.Array, out_ch: int, name: str) -> jax.Array:
        remat = self.config.model.get("remat", False)
        block = (_RematResnetBlockDDPM if remat else ResnetBlockDDPM)(
            out_ch, self.act, self.config.model.dropout, self.dtype, self.kernels, name=name
        )
        return block(h, self.temb, self.train)

    def attn(self, h: jax.Array, name: str) -> jax.Array:
        return AttnBlock(self.dtype, self.kernels, name=name)(h)


def _time_embedding(
    config: ml_collections.ConfigDict, act: Callable, dtype: jnp.dtype, labels: jax.Array
) -> jax.Array | None:
    """Sinusoidal embedding of the labels through two dense layers: [B, 4 nf], or None."""
    m = config.model
    if not m.conditional:
        return None
    temb = get_timestep_embedding(labels, m.nf)
    temb = dense(4 * m.nf, dtype, name="temb_dense_0")(temb)
    return dense(4 * m.nf, dtype, name="temb_dense_1")(act(temb))


def _down_path(p: _Parts, x: jax.Array) -> list[jax.Array]:
    """The encoder: the skip activations, from conv_in to the lowest resolution."""
    m = p.config.model
    num_levels = len(m.ch_mult)
    hs = [conv3x3(m.nf, dtype=p.dtype, name="conv_in", kernels=p.kernels)(x.astype(p.dtype))]
    for level in range(num_levels):
        for block in range(m.num_res_blocks):
            h = p.resnet(hs[-1], m.nf * m.ch_mult[level], f"down_{level}_block_{block}")
            if h.shape[2] in m.attn_resolutions:
                h = p.attn(h, f"down_{level}_attn_{block}")
            hs.append(h)
        if level != num_levels - 1:
            name = f"down_{level}_downsample"
            down = Downsample(
                with_conv=m.resamp_with_conv, dtype=p.dtype, kernels=p.kernels, name=name
            )
            hs.append(down(hs[-1]))
    return hs


def _up_path(p: _Parts, h: jax.Array, hs: list[jax.Array]) -> jax.Array:
    """The decoder, consuming the skips in hs from the end."""
    m = p.config.model
    for level in reversed(range(len(m.ch_mult))):
        for block in range(m.num_res_blocks + 1):
            skip = hs.pop()
            h = p.resnet(
                jnp.concatenate([h, skip], axis=-1),
                m.nf * m.ch_mult[level],
                f"up_{level}_block_{block}",
            )
        if h.shape[2] in m.attn_resolutions:
            h = p.attn(h, f"up_{level}_attn")
        if level != 0:
            name = f"up_{level}_upsample"
            up = Upsample(with_conv=m.resamp_with_conv, dtype=p.dtype, kernels=p.kernels, name=name)
            h = up(h)
    return h


class DDPM(nn.Module):
    """DDPM U-Net: (x [B, H, W, C], labels [B]) -> output [B, H, W, C] (float32).

    Labels are the float time labels of the VP configs (t * 999), or SMLD indices when
    model.scale_by_sigma divides the output by sigmas[labels] (VE configs).
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        # The helpers create submodules of this module, all with explicit names.
        config = self.config
        act = get_act(config)
        dtype, kernels = compute_dtype(config), model_kernels(config)
        temb = _time_embedding(config, act, dtype, labels)
        p = _Parts(config, act, dtype, kernels, temb, train)

        hs = _down_path(p, x if config.data.centered else 2 * x - 1.0)
        h = hs[-1]
        h = p.resnet(h, h.shape[-1], "mid_block_0")
        h = p.attn(h, "mid_attn")
        h = p.resnet(h, h.shape[-1], "mid_block_1")
        h = _up_path(p, h, hs)

        h = act(group_norm(h.shape[-1], DDPM_GROUPS, dtype, name="norm_out", kernels=kernels)(h))
        conv_out = conv3x3(
            config.data.num_channels, init_scale=0.0, dtype=dtype, name="conv_out", kernels=kernels
        )
        h = conv_out(h).astype(jnp.float32)
        if config.model.scale_by_sigma:
            h = divide_by_sigma(h, labels, config)
        return h
