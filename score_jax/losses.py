"""Training objectives: continuous denoising score matching and the SMLD / DDPM discrete losses.

Every builder returns a pure `loss_fn(params, key, batch) -> (loss, aux)` where `batch["image"]`
is [B, H, W, C] (any [B, ...] works) and `aux["per_example"]` holds the [B] losses. They are
differentiable in `params` and safe under `jax.jit`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from score_jax.models.score_fn import ApplyFn, network_score_fn
from score_jax.sde import SDE, VESDE, VPSDE, SubVPSDE, batch_broadcast

LossFn = Callable[[Any, jax.Array, Mapping[str, jax.Array]], tuple[jax.Array, dict]]


def _reduce_fn(reduce_mean: bool) -> Callable[[jax.Array], jax.Array]:
    """Per-example reduction over non-batch dims: mean, or the official 0.5 * sum."""

    def reduce(x: jax.Array) -> jax.Array:
        flat = x.reshape(x.shape[0], -1)
        return jnp.mean(flat, axis=-1) if reduce_mean else 0.5 * jnp.sum(flat, axis=-1)

    return reduce


def _variables(params: Any, extra: Mapping[str, Any] | None) -> dict:
    return {"params": params, **(extra or {})}


def sde_loss_fn(
    sde: SDE,
    apply_fn: ApplyFn,
    train: bool = True,
    reduce_mean: bool = True,
    continuous: bool = True,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
    extra_variables: Mapping[str, Any] | None = None,
) -> LossFn:
    """Continuous DSM: E_t E_x0 E_z |s(x_t, t) std + z|^2, t ~ U(eps, T).

    With `likelihood_weighting` the weight is g(t)^2 (|s + z / std|^2), which makes the loss an
    upper bound on the negative log-likelihood (Song et al., 2021b).
    """
    score_fn = network_score_fn(sde, apply_fn, continuous)
    reduce = _reduce_fn(reduce_mean)

    def loss_fn(params, key, batch):
        x0 = batch["image"]
        k_t, k_z, k_drop = jax.random.split(key, 3)
        t = jax.random.uniform(k_t, (x0.shape[0],), minval=eps, maxval=sde.T)
        z = jax.random.normal(k_z, x0.shape)
        mean, std = sde.marginal_prob(x0, t)
        x_t = mean + batch_broadcast(std, x0) * z
        score = score_fn(
            _variables(params, extra_variables), x_t, t, train=train, rngs={"dropout": k_drop}
        )
        if likelihood_weighting:
            g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2
            losses = reduce(jnp.square(score + z / batch_broadcast(std, x0))) * g2
        else:
            losses = reduce(jnp.square(score * batch_broadcast(std, x0) + z))
        return jnp.mean(losses), {"per_example": losses}

    return loss_fn


def smld_loss_fn(
    sde: VESDE,
    apply_fn: ApplyFn,
    train: bool = True,
    reduce_mean: bool = False,
    extra_variables: Mapping[str, Any] | None = None,
) -> LossFn:
    """NCSN loss: sigma_i^2 |s(x0 + sigma_i z, i) + z / sigma_i|^2 with i uniform over levels.

    Label i indexes the descending noise levels (label 0 is sigma_max), as the NCSN networks do.
    """
    if not isinstance(sde, VESDE):
        raise ValueError(f"The SMLD loss needs a VESDE, got {type(sde).__name__}.")
    sigmas_desc = jnp.asarray(sde.discrete_sigmas[::-1].copy())
    reduce = _reduce_fn(reduce_mean)

    def loss_fn(params, key, batch):
        x0 = batch["image"]
        k_i, k_z, k_drop = jax.random.split(key, 3)
        labels = jax.random.randint(k_i, (x0.shape[0],), 0, sde.N)
        sigmas = batch_broadcast(sigmas_desc[labels], x0)
        noise = jax.random.normal(k_z, x0.shape) * sigmas
        score = apply_fn(
            _variables(params, extra_variables),
            x0 + noise,
            labels,
            train=train,
            rngs={"dropout": k_drop},
        )
        target = -noise / sigmas**2
        losses = reduce(jnp.square(score - target)) * sigmas_desc[labels] ** 2
        return jnp.mean(losses), {"per_example": losses}

    return loss_fn


def ddpm_loss_fn(
    sde: VPSDE,
    apply_fn: ApplyFn,
    train: bool = True,
    reduce_mean: bool = True,
    extra_variables: Mapping[str, Any] | None = None,
) -> LossFn:
    """DDPM loss: |eps_theta(sqrt(abar_i) x0 + sqrt(1 - abar_i) z, i) - z|^2, i uniform."""
    if not isinstance(sde, VPSDE):
        raise ValueError(f"The DDPM loss needs a VPSDE, got {type(sde).__name__}.")
    sqrt_abar = jnp.asarray(sde.sqrt_alphas_cumprod)
    sqrt_1m_abar = jnp.asarray(sde.sqrt_1m_alphas_cumprod)
    reduce = _reduce_fn(reduce_mean)

    def loss_fn(params, key, batch):
        x0 = batch["image"]
        k_i, k_z, k_drop = jax.random.split(key, 3)
        labels = jax.random.randint(k_i, (x0.shape[0],), 0, sde.N)
        noise = jax.random.normal(k_z, x0.shape)
        x_t = (
            batch_broadcast(sqrt_abar[labels], x0) * x0
            + batch_broadcast(sqrt_1m_abar[labels], x0) * noise
        )
        out = apply_fn(
            _variables(params, extra_variables), x_t, labels, train=train, rngs={"dropout": k_drop}
        )
        losses = reduce(jnp.square(out - noise))
        return jnp.mean(losses), {"per_example": losses}

    return loss_fn


def get_loss_fn(
    sde: SDE,
    apply_fn: ApplyFn,
    train: bool,
    reduce_mean: bool = False,
    continuous: bool = True,
    likelihood_weighting: bool = False,
) -> LossFn:
    """The loss the official configs select: continuous DSM, or SMLD (VE) / DDPM (VP) discrete."""
    if continuous:
        return sde_loss_fn(sde, apply_fn, train, reduce_mean, True, likelihood_weighting)
    if likelihood_weighting:
        raise ValueError("likelihood_weighting is only defined for continuous training.")
    if isinstance(sde, VESDE):
        return smld_loss_fn(sde, apply_fn, train, reduce_mean)
    if isinstance(sde, VPSDE):
        return ddpm_loss_fn(sde, apply_fn, train, reduce_mean)
    if isinstance(sde, SubVPSDE):
        raise ValueError("Discrete training is not defined for sub-VP SDEs; use continuous=True.")
    raise NotImplementedError(f"No discrete loss for {type(sde).__name__}.")
