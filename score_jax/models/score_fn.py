"""From raw network output to a score function, with the official label and scaling rules
(implemented on the SDE classes: `SDE.noise_labels`, `SDE.output_to_score`).

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

from score_jax.sde import SDE, ScoreFn

# apply(variables, x, labels, train, rngs) -> raw network output, same shape as x.
ApplyFn = Callable[..., jax.Array]
NetworkScoreFn = Callable[..., jax.Array]


def noise_labels(sde: SDE, t: jax.Array, continuous: bool) -> jax.Array:
    """The labels the official code feeds the network for time t [B] (`SDE.noise_labels`)."""
    return sde.noise_labels(t, continuous)


def output_to_score(sde: SDE, out: jax.Array, t: jax.Array, continuous: bool) -> jax.Array:
    """Raw network output -> the score of p_t (`SDE.output_to_score`; VE: as is; VP and
    sub-VP: -out / std)."""
    return sde.output_to_score(out, t, continuous)


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
