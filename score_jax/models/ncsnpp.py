"""NCSN++ and DDPM++ (Song et al. 2021): one U-Net with all options of the official configs.

The forward pass follows the official `ncsnpp.py` step by step, and sub-modules are created in
the same order, so Flax's automatic names (Dense_0, Conv_0, ResnetBlockBigGANpp_3, ...) are the
official JAX names and the official PyTorch `all_modules.<i>` list maps onto them in call order
(see convert.py). Inputs are NHWC; `time_cond` is sigma (Fourier embedding) or a timestep
(positional embedding), as `get_score_fn` passes them.
"""

from __future__ import annotations

import functools

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


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ score network: x [B, H, W, C], time_cond [B] -> [B, H, W, C]."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x: jax.Array, time_cond: jax.Array, train: bool = False) -> jax.Array:
        config = self.config
        m = config.model
        act = layers.get_act(config)
        dtype = jnp.dtype(m.get("dtype", "float32"))
        kernels = model_kernels(config)
        nf = m.nf
        ch_mult = tuple(m.ch_mult)
        num_resolutions = len(ch_mult)
        attn_resolutions = tuple(m.attn_resolutions)
        fir, fir_kernel = m.fir, tuple(m.fir_kernel)
        skip_rescale, init_scale = m.skip_rescale, m.init_scale
        resblock_type = _check_choice(config, "resblock_type", _RESBLOCKS)
        progressive = _check_choice(config, "progressive", _PROGRESSIVE)
        progressive_input = _check_choice(config, "progressive_input", _PROGRESSIVE_INPUT)
        embedding_type = _check_choice(config, "embedding_type", _EMBEDDINGS)
        combine_method = str(m.progressive_combine).lower()
        channels = x.shape[-1]
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"NCSNpp expects square NHWC images, got shape {x.shape}")

        # Noise-level embedding.
        if embedding_type == "fourier":
            used_sigmas = time_cond
            temb = layers.GaussianFourierProjection(embedding_size=nf, scale=m.fourier_scale)(
                jnp.log(time_cond)
            )
        else:
            used_sigmas = jnp.asarray(get_sigmas(config), jnp.float32)[time_cond.astype(jnp.int32)]
            temb = layers.get_timestep_embedding(time_cond, nf)
        if m.conditional:
            temb = layers.dense(nf * 4, dtype=dtype)(temb)
            temb = layers.dense(nf * 4, dtype=dtype)(act(temb))
        else:
            temb = None

        block_cls = {"ddpm": layers.ResnetBlockDDPMpp, "biggan": layers.ResnetBlockBigGANpp}
        block_cls = block_cls[resblock_type]
        block_name = block_cls.__name__
        if m.get("remat", False):
            # Explicit names below keep parameter paths identical with and without remat.
            block_cls = nn.remat(block_cls, static_argnums=(3,))
        block_kwargs = dict(
            act=act,
            dropout=m.dropout,
            init_scale=init_scale,
            skip_rescale=skip_rescale,
            dtype=dtype,
            kernels=kernels,
        )
        if resblock_type == "biggan":
            block_kwargs.update(fir=fir, fir_kernel=fir_kernel)
        block_count = [0]

        def resnet_block(h, out_ch=None, up=False, down=False):
            extra = dict(up=up, down=down) if resblock_type == "biggan" else {}
            name = f"{block_name}_{block_count[0]}"
            block = block_cls(out_ch=out_ch, name=name, **extra, **block_kwargs)
            block_count[0] += 1
            return block(h, temb, train)

        attn_block = functools.partial(
            layers.AttnBlockpp,
            init_scale=init_scale,
            skip_rescale=skip_rescale,
            dtype=dtype,
            kernels=kernels,
        )
        resample = dict(fir=fir, fir_kernel=fir_kernel, dtype=dtype, kernels=kernels)
        with_conv = m.resamp_with_conv

        if not config.data.centered:
            # The network sees [-1, 1] even when the data pipeline gives [0, 1].
            x = 2 * x - 1.0
        x = x.astype(jnp.float32)

        # Downsampling path.
        input_pyramid = x if progressive_input != "none" else None
        hs = [layers.conv3x3(nf, dtype=dtype, kernels=kernels)(x)]
        for i_level in range(num_resolutions):
            for _ in range(m.num_res_blocks):
                h = resnet_block(hs[-1], out_ch=nf * ch_mult[i_level])
                if h.shape[1] in attn_resolutions:
                    h = attn_block()(h)
                hs.append(h)

            if i_level != num_resolutions - 1:
                if resblock_type == "ddpm":
                    h = layers.Downsample(with_conv=with_conv, **resample)(hs[-1])
                else:
                    h = resnet_block(hs[-1], down=True)

                if progressive_input == "input_skip":
                    input_pyramid = layers.Downsample(with_conv=False, **resample)(input_pyramid)
                    h = layers.Combine(method=combine_method, dtype=dtype, kernels=kernels)(
                        input_pyramid, h
                    )
                elif progressive_input == "residual":
                    input_pyramid = layers.Downsample(
                        out_ch=h.shape[-1], with_conv=True, **resample
                    )(input_pyramid)
                    input_pyramid = input_pyramid + h
                    if skip_rescale:
                        input_pyramid = input_pyramid / np.sqrt(2.0)
                    h = input_pyramid
                hs.append(h)

        h = hs[-1]
        h = resnet_block(h)
        h = attn_block()(h)
        h = resnet_block(h)

        # Upsampling path.
        pyramid = None
        for i_level in reversed(range(num_resolutions)):
            for _ in range(m.num_res_blocks + 1):
                h = resnet_block(
                    jnp.concatenate([h, hs.pop()], axis=-1), out_ch=nf * ch_mult[i_level]
                )
            if h.shape[1] in attn_resolutions:
                h = attn_block()(h)

            if progressive != "none":
                in_ch = h.shape[-1]
                if i_level == num_resolutions - 1:
                    pyramid = act(layers.group_norm(in_ch, dtype=dtype, kernels=kernels)(h))
                    out = channels if progressive == "output_skip" else in_ch
                    scale = init_scale if progressive == "output_skip" else 1.0
                    pyramid = layers.conv3x3(out, init_scale=scale, dtype=dtype, kernels=kernels)(
                        pyramid
                    )
                elif progressive == "output_skip":
                    pyramid = layers.Upsample(with_conv=False, **resample)(pyramid)
                    pyramid_h = act(layers.group_norm(in_ch, dtype=dtype, kernels=kernels)(h))
                    pyramid_h = layers.conv3x3(
                        channels, init_scale=init_scale, dtype=dtype, kernels=kernels
                    )(pyramid_h)
                    pyramid = pyramid + pyramid_h
                else:
                    pyramid = layers.Upsample(out_ch=in_ch, with_conv=True, **resample)(pyramid)
                    pyramid = pyramid + h
                    if skip_rescale:
                        pyramid = pyramid / np.sqrt(2.0)
                    h = pyramid

            if i_level != 0:
                if resblock_type == "ddpm":
                    h = layers.Upsample(with_conv=with_conv, **resample)(h)
                else:
                    h = resnet_block(h, up=True)

        if hs:
            raise AssertionError("NCSNpp: unused skip connections (topology bug)")

        if progressive == "output_skip":
            h = pyramid
        else:
            h = act(layers.group_norm(h.shape[-1], dtype=dtype, kernels=kernels)(h))
            h = layers.conv3x3(channels, init_scale=init_scale, dtype=dtype, kernels=kernels)(h)

        h = h.astype(jnp.float32)
        if m.scale_by_sigma:
            h = h / used_sigmas.astype(jnp.float32).reshape((-1, 1, 1, 1))
        return h
