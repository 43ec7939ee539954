"""NCSN++ and DDPM++ (Song et al. 2021): one U-Net with all options of the official configs.

The forward pass follows the official `ncsnpp.py` step by step, and sub-modules are created in
the same order, so Flax's automatic names (Dense_0, Conv_0, ResnetBlockBigGANpp_3, ...) are the
official JAX names and the official PyTorch `all_modules.<i>` list maps onto them in call order
(see convert.py). Inputs are NHWC; `time_cond` is sigma (Fourier embedding) or a timestep
(positional embedding), as `get_score_fn` passes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_jax.models import layers
from score_jax.models.kernels import model_kernels

_PROGRESSIVE = ("none", "output_skip", "residual")
_PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
_EMBEDDINGS = ("fourier", "positional")
_RESBLOCKS = ("ddpm", "biggan")


def get_sigmas(config: ml_collections.ConfigDict) -> np.ndarray:
    """The official VE noise levels: geometric from sigma_max down to sigma_min, num_scales."""
    m = config.model
    return np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), m.num_scales))


def _check_choice(config, key: str, choices: tuple[str, ...]) -> str:
    value = str(config.model[key]).lower()
    if value not in choices:
        raise ValueError(f"config.model.{key} must be one of {choices}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class _Options:
    """The config.model options NCSNpp reads, parsed and validated once per call."""

    act: Callable[[jax.Array], jax.Array]
    dtype: jnp.dtype
    kernels: str
    nf: int
    ch_mult: tuple[int, ...]
    attn_resolutions: tuple[int, ...]
    num_res_blocks: int
    fir: bool
    fir_kernel: tuple[int, ...]
    skip_rescale: bool
    init_scale: float
    resblock_type: str
    progressive: str
    progressive_input: str
    embedding_type: str
    combine_method: str
    dropout: float
    resamp_with_conv: bool
    conditional: bool
    fourier_scale: float | None
    scale_by_sigma: bool
    remat: bool
    centered: bool

    @property
    def resample(self) -> dict:
        """Keyword arguments shared by every Upsample / Downsample."""
        return dict(
            fir=self.fir, fir_kernel=self.fir_kernel, dtype=self.dtype, kernels=self.kernels
        )


def _parse_options(config: ml_collections.ConfigDict) -> _Options:
    m = config.model
    # Activation, dtype and kernels are validated first, then the choices, as before the split.
    act = layers.get_act(config)
    dtype = jnp.dtype(m.get("dtype", "float32"))
    kernels = model_kernels(config)
    resblock_type = _check_choice(config, "resblock_type", _RESBLOCKS)
    progressive = _check_choice(config, "progressive", _PROGRESSIVE)
    progressive_input = _check_choice(config, "progressive_input", _PROGRESSIVE_INPUT)
    embedding_type = _check_choice(config, "embedding_type", _EMBEDDINGS)
    return _Options(
        act=act,
        dtype=dtype,
        kernels=kernels,
        nf=m.nf,
        ch_mult=tuple(m.ch_mult),
        attn_resolutions=tuple(m.attn_resolutions),
        num_res_blocks=m.num_res_blocks,
        fir=m.fir,
        fir_kernel=tuple(m.fir_kernel),
        skip_rescale=m.skip_rescale,
        init_scale=m.init_scale,
        resblock_type=resblock_type,
        progressive=progressive,
        progressive_input=progressive_input,
        embedding_type=embedding_type,
        combine_method=str(m.progressive_combine).lower(),
        dropout=m.dropout,
        resamp_with_conv=m.resamp_with_conv,
        conditional=m.conditional,
        # Read only for the Fourier embedding, as the positional one needs no such option.
        fourier_scale=m.fourier_scale if embedding_type == "fourier" else None,
        scale_by_sigma=m.scale_by_sigma,
        remat=m.get("remat", False),
        centered=config.data.centered,
    )


def _embed_noise_level(
    o: _Options, config: ml_collections.ConfigDict, time_cond: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
    """(sigmas [B] for scale_by_sigma, temb [B, 4 nf] or None); creates the embedding layers."""
    if o.embedding_type == "fourier":
        used_sigmas = time_cond
        temb = layers.GaussianFourierProjection(embedding_size=o.nf, scale=o.fourier_scale)(
            jnp.log(time_cond)
        )
    else:
        used_sigmas = jnp.asarray(get_sigmas(config), jnp.float32)[time_cond.astype(jnp.int32)]
        temb = layers.get_timestep_embedding(time_cond, o.nf)
    if not o.conditional:
        return used_sigmas, None
    temb = layers.dense(o.nf * 4, dtype=o.dtype)(temb)
    temb = layers.dense(o.nf * 4, dtype=o.dtype)(o.act(temb))
    return used_sigmas, temb


class _Blocks:
    """Creates residual and attention blocks in the calling NCSNpp, in call order.

    Residual blocks get explicit names `<BlockClass>_<count>`, so parameter paths are the same
    with and without remat; attention blocks keep Flax's automatic names.
    """

    def __init__(self, o: _Options, temb: jax.Array | None, train: bool):
        self.o, self.temb, self.train = o, temb, train
        block_cls = {"ddpm": layers.ResnetBlockDDPMpp, "biggan": layers.ResnetBlockBigGANpp}
        self.block_cls = block_cls[o.resblock_type]
        self.block_name = self.block_cls.__name__
        if o.remat:
            self.block_cls = nn.remat(self.block_cls, static_argnums=(3,))
        self.block_kwargs = dict(
            act=o.act,
            dropout=o.dropout,
            init_scale=o.init_scale,
            skip_rescale=o.skip_rescale,
            dtype=o.dtype,
            kernels=o.kernels,
        )
        if o.resblock_type == "biggan":
            self.block_kwargs.update(fir=o.fir, fir_kernel=o.fir_kernel)
        self.count = 0

    def resnet(self, h: jax.Array, out_ch: int | None = None, up=False, down=False) -> jax.Array:
        extra = dict(up=up, down=down) if self.o.resblock_type == "biggan" else {}
        name = f"{self.block_name}_{self.count}"
        block = self.block_cls(out_ch=out_ch, name=name, **extra, **self.block_kwargs)
        self.count += 1
        return block(h, self.temb, self.train)

    def attn(self, h: jax.Array) -> jax.Array:
        o = self.o
        return layers.AttnBlockpp(
            init_scale=o.init_scale, skip_rescale=o.skip_rescale, dtype=o.dtype, kernels=o.kernels
        )(h)


def _combine_input(
    o: _Options, h: jax.Array, input_pyramid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Merges the downsampled input into h after a downsampling step: (h, input_pyramid)."""
    if o.progressive_input == "input_skip":
        input_pyramid = layers.Downsample(with_conv=False, **o.resample)(input_pyramid)
        h = layers.Combine(method=o.combine_method, dtype=o.dtype, kernels=o.kernels)(
            input_pyramid, h
        )
    elif o.progressive_input == "residual":
        input_pyramid = layers.Downsample(out_ch=h.shape[-1], with_conv=True, **o.resample)(
            input_pyramid
        )
        input_pyramid = input_pyramid + h
        if o.skip_rescale:
            input_pyramid = input_pyramid / np.sqrt(2.0)
        h = input_pyramid
    return h, input_pyramid


def _down_path(o: _Options, blocks: _Blocks, x: jax.Array) -> list[jax.Array]:
    """The encoder: the skip activations, from the input conv to the lowest resolution."""
    input_pyramid = x if o.progressive_input != "none" else None
    hs = [layers.conv3x3(o.nf, dtype=o.dtype, kernels=o.kernels)(x)]
    num_resolutions = len(o.ch_mult)
    for i_level in range(num_resolutions):
        for _ in range(o.num_res_blocks):
            h = blocks.resnet(hs[-1], out_ch=o.nf * o.ch_mult[i_level])
            if h.shape[1] in o.attn_resolutions:
                h = blocks.attn(h)
            hs.append(h)

        if i_level != num_resolutions - 1:
            if o.resblock_type == "ddpm":
                h = layers.Downsample(with_conv=o.resamp_with_conv, **o.resample)(hs[-1])
            else:
                h = blocks.resnet(hs[-1], down=True)
            if o.progressive_input != "none":
                h, input_pyramid = _combine_input(o, h, input_pyramid)
            hs.append(h)
    return hs


def _output_pyramid(
    o: _Options, h: jax.Array, pyramid: jax.Array | None, top: bool, channels: int
) -> tuple[jax.Array, jax.Array]:
    """One step of the progressive output pyramid at a decoder level: (h, pyramid)."""
    in_ch = h.shape[-1]
    if top:
        pyramid = o.act(layers.group_norm(in_ch, dtype=o.dtype, kernels=o.kernels)(h))
        out = channels if o.progressive == "output_skip" else in_ch
        scale = o.init_scale if o.progressive == "output_skip" else 1.0
        pyramid = layers.conv3x3(out, init_scale=scale, dtype=o.dtype, kernels=o.kernels)(pyramid)
    elif o.progressive == "output_skip":
        pyramid = layers.Upsample(with_conv=False, **o.resample)(pyramid)
        pyramid_h = o.act(layers.group_norm(in_ch, dtype=o.dtype, kernels=o.kernels)(h))
        pyramid_h = layers.conv3x3(
            channels, init_scale=o.init_scale, dtype=o.dtype, kernels=o.kernels
        )(pyramid_h)
        pyramid = pyramid + pyramid_h
    else:
        pyramid = layers.Upsample(out_ch=in_ch, with_conv=True, **o.resample)(pyramid)
        pyramid = pyramid + h
        if o.skip_rescale:
            pyramid = pyramid / np.sqrt(2.0)
        h = pyramid
    return h, pyramid


def _up_path(
    o: _Options, blocks: _Blocks, h: jax.Array, hs: list[jax.Array], channels: int
) -> tuple[jax.Array, jax.Array | None]:
    """The decoder, consuming the skips in hs: (h, output pyramid or None)."""
    num_resolutions = len(o.ch_mult)
    pyramid = None
    for i_level in reversed(range(num_resolutions)):
        for _ in range(o.num_res_blocks + 1):
            h = blocks.resnet(
                jnp.concatenate([h, hs.pop()], axis=-1), out_ch=o.nf * o.ch_mult[i_level]
            )
        if h.shape[1] in o.attn_resolutions:
            h = blocks.attn(h)

        if o.progressive != "none":
            top = i_level == num_resolutions - 1
            h, pyramid = _output_pyramid(o, h, pyramid, top, channels)

        if i_level != 0:
            if o.resblock_type == "ddpm":
                h = layers.Upsample(with_conv=o.resamp_with_conv, **o.resample)(h)
            else:
                h = blocks.resnet(h, up=True)
    return h, pyramid


def _output_head(o: _Options, h: jax.Array, pyramid: jax.Array | None, channels: int) -> jax.Array:
    """GroupNorm-act-conv to `channels`, or the output pyramid itself under output_skip."""
    if o.progressive == "output_skip":
        return pyramid
    h = o.act(layers.group_norm(h.shape[-1], dtype=o.dtype, kernels=o.kernels)(h))
    return layers.conv3x3(channels, init_scale=o.init_scale, dtype=o.dtype, kernels=o.kernels)(h)


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ score network: x [B, H, W, C], time_cond [B] -> [B, H, W, C]."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x: jax.Array, time_cond: jax.Array, train: bool = False) -> jax.Array:
        # Helpers below create submodules of this module; the call order fixes their names.
        o = _parse_options(self.config)
        channels = x.shape[-1]
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"NCSNpp expects square NHWC images, got shape {x.shape}")

        used_sigmas, temb = _embed_noise_level(o, self.config, time_cond)
        blocks = _Blocks(o, temb, train)

        if not o.centered:
            # The network sees [-1, 1] even when the data pipeline gives [0, 1].
            x = 2 * x - 1.0
        x = x.astype(jnp.float32)

        hs = _down_path(o, blocks, x)
        h = blocks.resnet(hs[-1])
        h = blocks.attn(h)
        h = blocks.resnet(h)
        h, pyramid = _up_path(o, blocks, h, hs, channels)
        if hs:
            raise AssertionError("NCSNpp: unused skip connections (topology bug)")

        h = _output_head(o, h, pyramid, channels).astype(jnp.float32)
        if o.scale_by_sigma:
            h = h / used_sigmas.astype(jnp.float32).reshape((-1, 1, 1, 1))
        return h
