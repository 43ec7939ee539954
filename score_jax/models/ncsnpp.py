"""NCSN++ and DDPM++ (Song et al. 2021): one U-Net with all options of the official configs.

The forward pass follows the official `ncsnpp.py` step by step, and sub-modules are created in
the same order, so Flax's automatic names (Dense_0, Conv_0, ResnetBlockBigGANpp_3, ...) are the
official JAX names and the official PyTorch `all_modules.<i>` list maps onto them in call order
(see convert.py). Inputs are NHWC; `time_cond` is sigma (Fourier embedding) or a timestep
(positional embedding), as `get_score_fn` passes them. `models.get_model` reads the config and
sets the fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import layers
from score_jax.models.kernels import Kernels

PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
EMBEDDINGS = ("fourier", "positional")
RESBLOCKS = ("ddpm", "biggan")


def _resample(net: NCSNpp) -> dict:
    """Keyword arguments shared by every Upsample / Downsample."""
    return dict(fir=net.fir, fir_kernel=net.fir_kernel, dtype=net.dtype, kernels=net.kernels)


def _embed_noise_level(net: NCSNpp, time_cond: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """(sigmas [B] for scale_by_sigma, temb [B, 4 nf] or None); creates the embedding layers."""
    if net.embedding_type == "fourier":
        used_sigmas = time_cond
        temb = layers.GaussianFourierProjection(embedding_size=net.nf, scale=net.fourier_scale)(
            jnp.log(time_cond)
        )
    else:
        sigmas = layers.smld_sigmas(net.sigma_min, net.sigma_max, net.num_scales)
        used_sigmas = jnp.asarray(sigmas, jnp.float32)[time_cond.astype(jnp.int32)]
        temb = layers.get_timestep_embedding(time_cond, net.nf)
    if not net.conditional:
        return used_sigmas, None
    temb = layers.dense(net.nf * 4, dtype=net.dtype)(temb)
    temb = layers.dense(net.nf * 4, dtype=net.dtype)(net.act(temb))
    return used_sigmas, temb


class _Blocks:
    """Creates residual and attention blocks in the calling NCSNpp, in call order.

    Residual blocks get explicit names `<BlockClass>_<count>`, so parameter paths are the same
    with and without remat; attention blocks keep Flax's automatic names.
    """

    def __init__(self, net: NCSNpp, temb: jax.Array | None, train: bool):
        self.net, self.temb, self.train = net, temb, train
        block_cls = {"ddpm": layers.ResnetBlockDDPMpp, "biggan": layers.ResnetBlockBigGANpp}
        self.block_cls = block_cls[net.resblock_type]
        self.block_name = self.block_cls.__name__
        if net.remat:
            self.block_cls = nn.remat(self.block_cls, static_argnums=(3,))
        self.block_kwargs = dict(
            act=net.act,
            dropout=net.dropout,
            init_scale=net.init_scale,
            skip_rescale=net.skip_rescale,
            dtype=net.dtype,
            kernels=net.kernels,
        )
        if net.resblock_type == "biggan":
            self.block_kwargs.update(fir=net.fir, fir_kernel=net.fir_kernel)
        self.count = 0

    def resnet(self, h: jax.Array, out_ch: int | None = None, up=False, down=False) -> jax.Array:
        extra = dict(up=up, down=down) if self.net.resblock_type == "biggan" else {}
        name = f"{self.block_name}_{self.count}"
        block = self.block_cls(out_ch=out_ch, name=name, **extra, **self.block_kwargs)
        self.count += 1
        return block(h, self.temb, self.train)

    def attn(self, h: jax.Array) -> jax.Array:
        net = self.net
        return layers.AttnBlockpp(
            net.kernels, init_scale=net.init_scale, skip_rescale=net.skip_rescale, dtype=net.dtype
        )(h)


def _combine_input(
    net: NCSNpp, h: jax.Array, input_pyramid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Merges the downsampled input into h after a downsampling step: (h, input_pyramid)."""
    if net.progressive_input == "input_skip":
        input_pyramid = layers.Downsample(with_conv=False, **_resample(net))(input_pyramid)
        combine = layers.Combine(net.kernels, method=net.progressive_combine, dtype=net.dtype)
        h = combine(input_pyramid, h)
    elif net.progressive_input == "residual":
        input_pyramid = layers.Downsample(out_ch=h.shape[-1], with_conv=True, **_resample(net))(
            input_pyramid
        )
        input_pyramid = input_pyramid + h
        if net.skip_rescale:
            input_pyramid = input_pyramid / np.sqrt(2.0)
        h = input_pyramid
    return h, input_pyramid


def _down_path(net: NCSNpp, blocks: _Blocks, x: jax.Array) -> list[jax.Array]:
    """The encoder: the skip activations, from the input conv to the lowest resolution."""
    input_pyramid = x if net.progressive_input != "none" else None
    hs = [layers.conv3x3(net.kernels.conv, net.nf, dtype=net.dtype)(x)]
    num_resolutions = len(net.ch_mult)
    for i_level in range(num_resolutions):
        for _ in range(net.num_res_blocks):
            h = blocks.resnet(hs[-1], out_ch=net.nf * net.ch_mult[i_level])
            if h.shape[1] in net.attn_resolutions:
                h = blocks.attn(h)
            hs.append(h)

        if i_level != num_resolutions - 1:
            if net.resblock_type == "ddpm":
                h = layers.Downsample(with_conv=net.resamp_with_conv, **_resample(net))(hs[-1])
            else:
                h = blocks.resnet(hs[-1], down=True)
            if net.progressive_input != "none":
                h, input_pyramid = _combine_input(net, h, input_pyramid)
            hs.append(h)
    return hs


def _output_pyramid(
    net: NCSNpp, h: jax.Array, pyramid: jax.Array | None, top: bool, channels: int
) -> tuple[jax.Array, jax.Array]:
    """One step of the progressive output pyramid at a decoder level: (h, pyramid)."""
    in_ch = h.shape[-1]
    if top:
        pyramid = net.act(layers.group_norm(net.kernels.norm, in_ch)(h))
        out = channels if net.progressive == "output_skip" else in_ch
        scale = net.init_scale if net.progressive == "output_skip" else 1.0
        pyramid = layers.conv3x3(net.kernels.conv, out, init_scale=scale, dtype=net.dtype)(pyramid)
    elif net.progressive == "output_skip":
        pyramid = layers.Upsample(with_conv=False, **_resample(net))(pyramid)
        pyramid_h = net.act(layers.group_norm(net.kernels.norm, in_ch)(h))
        pyramid_h = layers.conv3x3(
            net.kernels.conv, channels, init_scale=net.init_scale, dtype=net.dtype
        )(pyramid_h)
        pyramid = pyramid + pyramid_h
    else:
        pyramid = layers.Upsample(out_ch=in_ch, with_conv=True, **_resample(net))(pyramid)
        pyramid = pyramid + h
        if net.skip_rescale:
            pyramid = pyramid / np.sqrt(2.0)
        h = pyramid
    return h, pyramid


def _up_path(
    net: NCSNpp, blocks: _Blocks, h: jax.Array, hs: list[jax.Array], channels: int
) -> tuple[jax.Array, jax.Array | None]:
    """The decoder, consuming the skips in hs: (h, output pyramid or None)."""
    num_resolutions = len(net.ch_mult)
    pyramid = None
    for i_level in reversed(range(num_resolutions)):
        for _ in range(net.num_res_blocks + 1):
            h = blocks.resnet(
                jnp.concatenate([h, hs.pop()], axis=-1), out_ch=net.nf * net.ch_mult[i_level]
            )
        if h.shape[1] in net.attn_resolutions:
            h = blocks.attn(h)

        if net.progressive != "none":
            top = i_level == num_resolutions - 1
            h, pyramid = _output_pyramid(net, h, pyramid, top, channels)

        if i_level != 0:
            if net.resblock_type == "ddpm":
                h = layers.Upsample(with_conv=net.resamp_with_conv, **_resample(net))(h)
            else:
                h = blocks.resnet(h, up=True)
    return h, pyramid


def _output_head(net: NCSNpp, h: jax.Array, pyramid: jax.Array | None, channels: int) -> jax.Array:
    """GroupNorm-act-conv to `channels`, or the output pyramid itself under output_skip."""
    if net.progressive == "output_skip":
        return pyramid
    h = net.act(layers.group_norm(net.kernels.norm, h.shape[-1])(h))
    conv = layers.conv3x3(net.kernels.conv, channels, init_scale=net.init_scale, dtype=net.dtype)
    return conv(h)


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ score network: x [B, H, W, C], time_cond [B] -> [B, H, W, C].

    The fields are config.model's options of the same names (`models.get_model` reads them);
    sigma_min, sigma_max and num_scales give the noise levels of positional labels.
    """

    kernels: Kernels
    act: Callable[[jax.Array], jax.Array] = nn.silu
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    init_scale: float = 0.0
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    scale_by_sigma: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    centered: bool = False
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, time_cond: jax.Array, train: bool = False) -> jax.Array:
        # Helpers below create submodules of this module; the call order fixes their names.
        channels = x.shape[-1]
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"NCSNpp expects square NHWC images, got shape {x.shape}")

        used_sigmas, temb = _embed_noise_level(self, time_cond)
        blocks = _Blocks(self, temb, train)

        if not self.centered:
            # The network sees [-1, 1] even when the data pipeline gives [0, 1].
            x = 2 * x - 1.0
        x = x.astype(jnp.float32)

        hs = _down_path(self, blocks, x)
        h = blocks.resnet(hs[-1])
        h = blocks.attn(h)
        h = blocks.resnet(h)
        h, pyramid = _up_path(self, blocks, h, hs, channels)
        if hs:
            raise AssertionError("NCSNpp: unused skip connections (topology bug)")

        h = _output_head(self, h, pyramid, channels).astype(jnp.float32)
        if self.scale_by_sigma:
            h = h / used_sigmas.astype(jnp.float32).reshape((-1, 1, 1, 1))
        return h
