"""From raw network output to a score function, with the official label and scaling rules.

| SDE          | continuous                          | discrete                                   |
|--------------|-------------------------------------|--------------------------------------------|
| VE           | labels = sigma(t); score = out      | labels = round((T - t)(N - 1)); score = out |
| VP           | labels = 999 t; score = -out / std  | labels = t (N - 1); std from the DDPM table |
| sub-VP       | labels = 999 t; score = -out / std  | (as continuous)                            |

For VP discrete the labels stay floats (the official code passes them unrounded to the network)
while the std is read from `sqrt_1m_alphas_cumprod` at the truncated index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.sde import SDE, VESDE, VPSDE, ScoreFn, SubVPSDE, batch_broadcast

# apply(variables, x, labels, train, rngs) -> raw network output, same shape as x.
ApplyFn = Callable[..., jax.Array]
NetworkScoreFn = Callable[..., jax.Array]


def noise_labels(sde: SDE, t: jax.Array, continuous: bool) -> jax.Array:
    """The labels the official code feeds the network for time t [B]."""
    if isinstance(sde, VESDE):
        if continuous:
            return sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]
        return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)
    if isinstance(sde, VPSDE | SubVPSDE):
        if continuous or isinstance(sde, SubVPSDE):
            return t * 999
        return t * (sde.N - 1)
    raise NotImplementedError(f"SDE class {type(sde).__name__} is not supported.")


def output_to_score(sde: SDE, out: jax.Array, t: jax.Array, continuous: bool) -> jax.Array:
    """Turns raw network output into the score of p_t (VE: as is; VP/sub-VP: -out / std)."""
    if isinstance(sde, VESDE):
        return out
    if isinstance(sde, VPSDE) and not continuous:
        std = jnp.asarray(sde.sqrt_1m_alphas_cumprod)[(t * (sde.N - 1)).astype(jnp.int32)]
    else:
        std = sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]
    return -out / batch_broadcast(std, out)


def network_score_fn(sde: SDE, apply_fn: ApplyFn, continuous: bool = True) -> NetworkScoreFn:
    """fn(variables, x, t, train=False, rngs=None) -> score, for losses and training."""

    def fn(
        variables: Mapping[str, Any],
        x: jax.Array,
        t: jax.Array,
        train: bool = False,
        rngs: Mapping[str, jax.Array] | None = None,
    ) -> jax.Array:
        labels = noise_labels(sde, t, continuous)
        out = apply_fn(variables, x, labels, train=train, rngs=rngs or {})
        return output_to_score(sde, out, t, continuous)

    return fn


def get_score_fn(
    sde: SDE,
    model: nn.Module,
    variables: Mapping[str, Any],
    train: bool = False,
    continuous: bool = True,
    dropout_rng: jax.Array | None = None,
) -> ScoreFn:
    """score_fn(x [B, H, W, C], t [B]) -> score for a Flax score network with fixed variables."""
    if train and dropout_rng is None:
        raise ValueError("get_score_fn(train=True) needs dropout_rng for the dropout layers.")
    fn = network_score_fn(sde, model.apply, continuous)
    rngs = {"dropout": dropout_rng} if train else None

    def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return fn(variables, x, t, train=train, rngs=rngs)

    return score_fn
