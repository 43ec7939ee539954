"""Score networks and their adaptation to the score interface `score_fn(x, t)`.

`MODELS` maps `config.model.name` to a Flax module class built as `cls(config=config)`;
`get_model` and `init_model` are the only entry points other code needs.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from score_jax.models.ddpm import DDPM
from score_jax.models.mlp import MLP, example_input_shape
from score_jax.models.ncsnpp import NCSNpp
from score_jax.models.ncsnv2 import NCSNv2_64, NCSNv2_128, NCSNv2_256
from score_jax.models.score_fn import get_score_fn, network_score_fn, noise_labels, output_to_score

MODELS: dict[str, type[nn.Module]] = {
    "ncsnpp": NCSNpp,
    "ddpm": DDPM,
    "ncsnv2_64": NCSNv2_64,
    "ncsnv2_128": NCSNv2_128,
    "ncsnv2_256": NCSNv2_256,
    "mlp": MLP,
}


def get_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The score network named by config.model.name, configured by `config`."""
    name = str(config.model.name).lower()
    if name not in MODELS:
        raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](config=config)


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
    "count_params",
    "example_labels",
    "get_model",
    "get_score_fn",
    "init_model",
    "network_score_fn",
    "noise_labels",
    "output_to_score",
]
