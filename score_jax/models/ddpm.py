"""The DDPM score network of Ho et al. (2020), as in the official score_sde code; NHWC Flax Linen.

A U-Net of ResNet blocks with GroupNorm(32 groups), self-attention at the resolutions in
`model.attn_resolutions`, and a sinusoidal embedding of the (float) noise label. Unlike
NCSN++/DDPM++ the blocks never rescale their skip sums.

Submodule names describe the place in the U-Net (`down_1_block_0`, `mid_attn`, ...);
`module_names(config)` lists them in the order of the official `all_modules` list, which is what
the checkpoint converter needs. Inside a block the official names are kept (`GroupNorm_0`,
`Conv_0`, `Dense_0`, `NIN_0`, ...). `models.get_model` reads the config and sets the fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_jax.models.kernels import Kernels
from score_jax.models.layers import (
    NIN,
    Downsample,
    Upsample,
    add_temb,
    attention,
    conv3x3,
    dense,
    divide_by_sigma,
    get_timestep_embedding,
    group_norm,
    smld_sigmas,
)

# DDPM's layers fix the GroupNorm groups (NCSN++ uses min(C // 4, 32) instead).
DDPM_GROUPS = 32


def sigma_table(config: ml_collections.ConfigDict) -> np.ndarray:
    """The SMLD noise levels of config.model (sigma_max down to sigma_min, num_scales)."""
    m = config.model
    return smld_sigmas(m.sigma_min, m.sigma_max, m.num_scales)


class ResnetBlockDDPM(nn.Module):
    """GN-act-conv, + Dense(act(temb)), GN-act-dropout-conv(zero init), + NIN shortcut if needed."""

    out_ch: int
    act: Callable[[jax.Array], jax.Array]
    dropout: float
    kernels: Kernels
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None, train: bool) -> jax.Array:
        in_ch, out_ch, dt, kn = x.shape[-1], self.out_ch, self.dtype, self.kernels
        h = self.act(group_norm(kn.norm, in_ch, DDPM_GROUPS, name="GroupNorm_0")(x))
        h = conv3x3(kn.conv, out_ch, dtype=dt, name="Conv_0")(h)
        h = add_temb(h, temb, self.act, dt, kn)
        h = self.act(group_norm(kn.norm, out_ch, DDPM_GROUPS, name="GroupNorm_1")(h))
        h = kn.dropout(self.dropout, deterministic=not train)(h)
        h = conv3x3(kn.conv, out_ch, init_scale=0.0, dtype=dt, name="Conv_1")(h)
        if in_ch != out_ch:
            x = NIN(out_ch, kn, dtype=dt, name="NIN_0")(x)
        return x + h


# remat: each block recomputed in the backward pass (train, argument 3, is static); the
# parameter names are unchanged. Built once, not per block.
_RematResnetBlockDDPM = nn.remat(ResnetBlockDDPM, static_argnums=(3,))


class AttnBlock(nn.Module):
    """x + NIN_3(softmax attention over all H*W pixels of NIN q, k, v of GroupNorm(32)(x))."""

    kernels: Kernels
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, dt, kn = x.shape[-1], self.dtype, self.kernels
        h = group_norm(kn.norm, c, DDPM_GROUPS, name="GroupNorm_0")(x)
        q, k, v = (NIN(c, kn, dtype=dt, name=f"NIN_{i}")(h) for i in range(3))
        out = NIN(c, kn, init_scale=0.0, dtype=dt, name="NIN_3")
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


class _Blocks:
    """Creates the named residual and attention blocks of the calling DDPM."""

    def __init__(self, net: DDPM, temb: jax.Array | None, train: bool):
        self.net, self.temb, self.train = net, temb, train

    def resnet(self, h: jax.Array, out_ch: int, name: str) -> jax.Array:
        net = self.net
        cls = _RematResnetBlockDDPM if net.remat else ResnetBlockDDPM
        block = cls(out_ch, net.act, net.dropout, net.kernels, net.dtype, name=name)
        return block(h, self.temb, self.train)

    def attn(self, h: jax.Array, name: str) -> jax.Array:
        return AttnBlock(self.net.kernels, self.net.dtype, name=name)(h)


def _time_embedding(net: DDPM, labels: jax.Array) -> jax.Array | None:
    """Sinusoidal embedding of the labels through two dense layers: [B, 4 nf], or None."""
    if not net.conditional:
        return None
    temb = get_timestep_embedding(labels, net.nf)
    temb = dense(4 * net.nf, net.dtype, name="temb_dense_0")(temb)
    return dense(4 * net.nf, net.dtype, name="temb_dense_1")(net.act(temb))


def _down_path(net: DDPM, blocks: _Blocks, x: jax.Array) -> list[jax.Array]:
    """The encoder: the skip activations, from conv_in to the lowest resolution."""
    num_levels = len(net.ch_mult)
    conv_in = conv3x3(net.kernels.conv, net.nf, dtype=net.dtype, name="conv_in")
    hs = [conv_in(x.astype(net.dtype))]
    for level in range(num_levels):
        for block in range(net.num_res_blocks):
            h = blocks.resnet(hs[-1], net.nf * net.ch_mult[level], f"down_{level}_block_{block}")
            if h.shape[2] in net.attn_resolutions:
                h = blocks.attn(h, f"down_{level}_attn_{block}")
            hs.append(h)
        if level != num_levels - 1:
            name = f"down_{level}_downsample"
            down = Downsample(
                net.kernels, with_conv=net.resamp_with_conv, dtype=net.dtype, name=name
            )
            hs.append(down(hs[-1]))
    return hs


def _up_path(net: DDPM, blocks: _Blocks, h: jax.Array, hs: list[jax.Array]) -> jax.Array:
    """The decoder, consuming the skips in hs from the end."""
    for level in reversed(range(len(net.ch_mult))):
        for block in range(net.num_res_blocks + 1):
            skip = hs.pop()
            h = blocks.resnet(
                jnp.concatenate([h, skip], axis=-1),
                net.nf * net.ch_mult[level],
                f"up_{level}_block_{block}",
            )
        if h.shape[2] in net.attn_resolutions:
            h = blocks.attn(h, f"up_{level}_attn")
        if level != 0:
            name = f"up_{level}_upsample"
            up = Upsample(net.kernels, with_conv=net.resamp_with_conv, dtype=net.dtype, name=name)
            h = up(h)
    return h


class DDPM(nn.Module):
    """DDPM U-Net: (x [B, H, W, C], labels [B]) -> output [B, H, W, C] (float32).

    Labels are the float time labels of the VP configs (t * 999), or SMLD indices when
    scale_by_sigma divides the output by the noise levels (sigma_min, sigma_max,
    num_scales) at the labels (VE configs). The fields are config.model's options.
    """

    kernels: Kernels
    act: Callable[[jax.Array], jax.Array] = nn.silu
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    scale_by_sigma: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    centered: bool = True
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        # The helpers create submodules of this module, all with explicit names.
        blocks = _Blocks(self, _time_embedding(self, labels), train)
        hs = _down_path(self, blocks, x if self.centered else 2 * x - 1.0)
        h = hs[-1]
        h = blocks.resnet(h, h.shape[-1], "mid_block_0")
        h = blocks.attn(h, "mid_attn")
        h = blocks.resnet(h, h.shape[-1], "mid_block_1")
        h = _up_path(self, blocks, h, hs)

        norm_out = group_norm(self.kernels.norm, h.shape[-1], DDPM_GROUPS, name="norm_out")
        h = self.act(norm_out(h))
        conv_out = conv3x3(
            self.kernels.conv, x.shape[-1], init_scale=0.0, dtype=self.dtype, name="conv_out"
        )
        h = conv_out(h).astype(jnp.float32)
        if self.scale_by_sigma:
            sigmas = smld_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
            h = divide_by_sigma(h, labels, sigmas)
        return h
