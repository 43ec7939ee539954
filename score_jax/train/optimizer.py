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
LR_DECAYS = ("none", "cosine")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """lr * min(count / warmup, 1) (1 when warmup <= 0); with optim.lr_decay = "cosine" also
    times (1 + cos(pi f)) / 2, f = (count - warmup) / (training.n_iters - warmup) in [0, 1]."""
    lr, warmup = float(config.optim.lr), int(config.optim.warmup)
    decay = config.optim.lr_decay
    if decay not in LR_DECAYS:
        raise ValueError(f"config.optim.lr_decay must be one of {LR_DECAYS}, got {decay!r}.")
    decay_start = max(warmup, 0)
    decay_steps = max(int(config.training.n_iters) - decay_start, 1)

    def schedule(count: jax.Array) -> jax.Array:
        rate = jnp.asarray(lr, jnp.float32)
        if warmup > 0:
            rate = rate * jnp.minimum(count / warmup, 1.0)
        if decay == "cosine":
            done = jnp.clip((count - decay_start) / decay_steps, 0.0, 1.0)
            rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
        return rate

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
