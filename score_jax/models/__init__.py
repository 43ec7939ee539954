"""Score networks and their adaptation to the score interface `score_fn(x, t)`.

`get_model(config)` is the one place that reads config.model (and config.data.centered): it
validates the options, resolves the activation, the compute dtype and the kernel choice
(models/kernels.py) once, and returns a network whose fields are plain values. `MODELS` maps
`config.model.name` to the function that does this for one family; `get_model` and
`init_model` are the only entry points other code needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from score_jax.models.ddpm import DDPM
from score_jax.models.kernels import get_kernels
from score_jax.models.layers import ACTIVATIONS
from score_jax.models.mlp import EMBEDDINGS as MLP_EMBEDDINGS
from score_jax.models.mlp import MLP, example_input_shape
from score_jax.models.ncsnpp import EMBEDDINGS, PROGRESSIVE, PROGRESSIVE_INPUT, RESBLOCKS, NCSNpp
from score_jax.models.ncsnv2 import NCSNv2, NCSNv2_64, NCSNv2_128, NCSNv2_256
from score_jax.models.score_fn import get_score_fn, network_score_fn, noise_labels, output_to_score

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
    """Compute dtype from config.model.dtype ('float32' default); parameters stay float32."""
    name = str(config.model.get("dtype", "float32"))
    if name not in COMPUTE_DTYPES:
        raise ValueError(
            f"config.model.dtype must be one of {sorted(COMPUTE_DTYPES)}, found {name!r}."
        )
    return COMPUTE_DTYPES[name]


def _activation(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    name = config.model.nonlinearity.lower()
    if name not in ACTIVATIONS:
        raise ValueError(
            f"config.model.nonlinearity must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        )
    return ACTIVATIONS[name]


def _choice(config: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> str:
    value = str(config.model[key]).lower()
    if value not in choices:
        raise ValueError(f"config.model.{key} must be one of {choices}, got {value!r}")
    return value


def _noise_levels(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The SMLD noise levels' options (sigma_min, sigma_max, num_scales) of config.model."""
    m = config.model
    return dict(
        sigma_min=float(m.sigma_min), sigma_max=float(m.sigma_max), num_scales=int(m.num_scales)
    )


def _common(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The options every U-Net reads: activation, compute dtype, centering, remat."""
    m = config.model
    return dict(
        act=_activation(config),
        dtype=compute_dtype(config),
        centered=bool(config.data.centered),
        remat=bool(m.get("remat", False)),
    )


def _unet(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The U-Net shape shared by NCSN++ and DDPM."""
    m = config.model
    return dict(
        nf=int(m.nf),
        ch_mult=tuple(int(c) for c in m.ch_mult),
        num_res_blocks=int(m.num_res_blocks),
        attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
        dropout=float(m.dropout),
        resamp_with_conv=bool(m.resamp_with_conv),
        conditional=bool(m.conditional),
        scale_by_sigma=bool(m.scale_by_sigma),
    )


def _ncsnpp(config: ml_collections.ConfigDict) -> NCSNpp:
    m = config.model
    # Activation, dtype and kernels are validated first, then the choices.
    common, kernels = _common(config), get_kernels(config)
    embedding_type = _choice(config, "embedding_type", EMBEDDINGS)
    return NCSNpp(
        kernels=kernels,
        **common,
        **_unet(config),
        fir=bool(m.fir),
        fir_kernel=tuple(m.fir_kernel),
        skip_rescale=bool(m.skip_rescale),
        resblock_type=_choice(config, "resblock_type", RESBLOCKS),
        progressive=_choice(config, "progressive", PROGRESSIVE),
        progressive_input=_choice(config, "progressive_input", PROGRESSIVE_INPUT),
        progressive_combine=str(m.progressive_combine).lower(),
        init_scale=float(m.init_scale),
        embedding_type=embedding_type,
        # Read only for the Fourier embedding; the positional one has no such option.
        fourier_scale=float(m.fourier_scale) if embedding_type == "fourier" else 0.0,
        **_noise_levels(config),
    )


def _ddpm(config: ml_collections.ConfigDict) -> DDPM:
    return DDPM(
        kernels=get_kernels(config), **_common(config), **_unet(config), **_noise_levels(config)
    )


def _ncsnv2(cls: type[NCSNv2]) -> Callable[[ml_collections.ConfigDict], NCSNv2]:
    def build(config: ml_collections.ConfigDict) -> NCSNv2:
        if config.model.normalization != "InstanceNorm++":
            raise ValueError(
                "NCSNv2 supports config.model.normalization='InstanceNorm++' only, "
                f"found {config.model.normalization!r}."
            )
        return cls(
            conv=get_kernels(config).conv,
            nf=int(config.model.nf),
            **_common(config),
            **_noise_levels(config),
        )

    return build


def _mlp(config: ml_collections.ConfigDict) -> MLP:
    m = config.model
    if m.embedding_type not in MLP_EMBEDDINGS:
        raise ValueError(
            f"config.model.embedding_type must be 'fourier' or 'positional', "
            f"got {m.embedding_type!r}."
        )
    return MLP(
        dropout_cls=get_kernels(config).dropout,
        nf=int(m.nf),
        num_res_blocks=int(m.num_res_blocks),
        embedding_type=m.embedding_type,
        dropout=float(m.dropout),
        scale_by_sigma=bool(m.get("scale_by_sigma", False)),
        dtype=compute_dtype(config),
    )


# config.model.name -> the function that reads config.model and builds that network.
MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "ncsnpp": _ncsnpp,
    "ddpm": _ddpm,
    "ncsnv2_64": _ncsnv2(NCSNv2_64),
    "ncsnv2_128": _ncsnv2(NCSNv2_128),
    "ncsnv2_256": _ncsnv2(NCSNv2_256),
    "mlp": _mlp,
}


def get_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The score network named by config.model.name, its fields read from `config`."""
    name = str(config.model.name).lower()
    if name not in MODELS:
        raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](config)


def example_labels(config: ml_collections.ConfigDict, batch: int = 1) -> jax.Array:
    """Labels of the kind `get_score_fn` passes: indices for discrete VE, floats otherwise."""
    if str(config.training.sde).lower() == "vesde" and not config.training.continuous:
        return jnp.zeros((batch,), jnp.int32)
    return jnp.ones((batch,), jnp.float32)


def init_model(key: jax.Array, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Freshly initialised variables ({'params': ...}) of get_model(config), float32.

    Traced as one jitted program, so `jax.eval_shape(lambda: init_model(key, config))` gives
    the parameter shapes without computing anything.
    """
    model = get_model(config)
    shape = example_input_shape(config)
    labels = example_labels(config, shape[0])

    @jax.jit
    def init(key):
        params_key, dropout_key = jax.random.split(key)
        x = jnp.zeros(shape, jnp.float32)
        rngs = {"params": params_key, "dropout": dropout_key}
        return model.init(rngs, x, labels, train=False)

    return dict(init(key))


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


__all__ = [
    "MODELS",
    "compute_dtype",
    "count_params",
    "example_labels",
    "get_model",
    "get_score_fn",
    "init_model",
    "network_score_fn",
    "noise_labels",
    "output_to_score",
]
