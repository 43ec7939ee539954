"""Adam with linear warmup, gradient clipping and decoupled weight decay; parameter EMA.

Matches the official optimizers: lr_n = lr * min(n / warmup, 1) for update n = 0, 1, ...
(so the very first update has lr 0, as in both official codes), clipping by global norm
g * clip / max(|g|, clip) when grad_clip >= 0, and weight decay added to the Adam update as
flax.optim.Adam did (decoupled, scaled by the learning rate).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

EMA_RULES = ("fixed", "warmup")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """lr * min(count / warmup, 1); a constant lr when warmup <= 0."""
    lr, warmup = float(config.optim.lr), int(config.optim.warmup)

    def schedule(count: jax.Array) -> jax.Array:
        if warmup <= 0:
            return jnp.asarray(lr, jnp.float32)
        return lr * jnp.minimum(count / warmup, 1.0)

    return schedule


def get_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optax transformation the config's optim section describes."""
    optim = config.optim
    if optim.optimizer != "Adam":
        raise ValueError(f"config.optim.optimizer must be 'Adam', got {optim.optimizer!r}.")
    parts = []
    if optim.grad_clip >= 0:
        parts.append(optax.clip_by_global_norm(float(optim.grad_clip)))
    parts.append(optax.scale_by_adam(b1=float(optim.beta1), b2=0.999, eps=float(optim.eps)))
    if optim.weight_decay:
        parts.append(optax.add_decayed_weights(float(optim.weight_decay)))
    parts.append(optax.scale_by_learning_rate(learning_rate_schedule(config)))
    return optax.chain(*parts)


def ema_decay(config: ml_collections.ConfigDict, num_updates: jax.Array) -> jax.Array:
    """The EMA rate applied at update number `num_updates` (1 for the first update)."""
    rate = float(config.model.ema_rate)
    rule = config.training.ema_rule
    if rule == "fixed":
        return jnp.asarray(rate, jnp.float32)
    if rule == "warmup":
        n = num_updates.astype(jnp.float32)
        return jnp.minimum(rate, (1.0 + n) / (10.0 + n))
    raise ValueError(f"config.training.ema_rule must be one of {EMA_RULES}, got {rule!r}.")


def update_ema(ema_params: Any, params: Any, decay: jax.Array) -> Any:
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
