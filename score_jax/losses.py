"""Training objectives: continuous denoising score matching and the SMLD / DDPM discrete losses.

Every builder returns a pure `loss_fn(params, key, batch) -> (loss, aux)` where `batch["image"]`
is [B, H, W, C] (any [B, ...] works) and `aux["per_example"]` holds the [B] losses. They are
differentiable in `params` and safe under `jax.jit`.

The randomness of a loss (times or noise levels, and the Gaussian noise) can also be drawn
beforehand with `loss_fn.draw_noise(key, x0)` and passed in `batch["noise"]`: a data-parallel
step draws it for the global batch, so each example's noise does not depend on how many devices
share the batch, while the network still runs once per device batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from score_jax.models.score_fn import ApplyFn, network_score_fn
from score_jax.sde import (
    SDE,
    VESDE,
    VPSDE,
    batch_broadcast,
    likelihood_proposal_scale,
    sample_likelihood_times,
)

NoiseFn = Callable[[jax.Array, jax.Array], dict]


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss `(params, key, batch) -> (loss, aux)` with its noise drawn by `draw_noise`.

    compute(params, batch, noise, dropout_key) is the loss for given noise; draw_noise(key, x0)
    draws that noise for a batch x0 [B, ...] (example b's noise is row b of every array).
    """

    compute: Callable[[Any, Mapping[str, jax.Array], dict, jax.Array], tuple[jax.Array, dict]]
    draw_noise: NoiseFn

    def __call__(self, params, key, batch):
        noise_key, dropout_key = jax.random.split(key)
        noise = batch["noise"] if "noise" in batch else self.draw_noise(noise_key, batch["image"])
        return self.compute(params, batch, noise, dropout_key)


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
    importance_weighting: bool = False,
) -> Loss:
    """Continuous DSM: E_t E_x0 E_z |s(x_t, t) std + z|^2, t ~ U(eps, T).

    With `likelihood_weighting` the weight is g(t)^2 (|s + z / std|^2), which makes the loss an
    upper bound on the negative log-likelihood (Song et al., 2021b). `importance_weighting`
    (with it) estimates the same expectation from times drawn with density proportional to
    g^2 / std^2 (`score_jax.sde.sample_likelihood_times`): per example Z / (T - eps) |s std + z|^2.
    """
    if importance_weighting and not likelihood_weighting:
        raise ValueError(
            "importance_weighting samples the times of the likelihood weighting; it needs "
            "likelihood_weighting=True (training.likelihood_weighting)."
        )
    score_fn = network_score_fn(sde, apply_fn, continuous)
    reduce = _reduce_fn(reduce_mean)

    def draw_noise(key, x0):
        k_t, k_z = jax.random.split(key)
        if importance_weighting:
            t = sample_likelihood_times(sde, k_t, x0.shape[0], eps)
        else:
            t = jax.random.uniform(k_t, (x0.shape[0],), minval=eps, maxval=sde.T)
        return {"t": t, "z": jax.random.normal(k_z, x0.shape)}

    def compute(params, batch, noise, k_drop):
        x0, t, z = batch["image"], noise["t"], noise["z"]
        mean, std = sde.marginal_prob(x0, t)
        x_t = mean + batch_broadcast(std, x0) * z
        score = score_fn(
            _variables(params, extra_variables), x_t, t, train=train, rngs={"dropout": k_drop}
        )
        if importance_weighting:
            # q / p * g^2 |s + z / std|^2 with q = 1 / (T - eps) and p = g^2 / std^2 / Z:
            # the g^2 / std^2 cancels, leaving the plain DSM term times Z / (T - eps).
            scale = likelihood_proposal_scale(sde, eps)
            losses = reduce(jnp.square(score * batch_broadcast(std, x0) + z)) * scale
        elif likelihood_weighting:
            g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2
            losses = reduce(jnp.square(score + z / batch_broadcast(std, x0))) * g2
        else:
            losses = reduce(jnp.square(score * batch_broadcast(std, x0) + z))
        return jnp.mean(losses), {"per_example": losses}

    return Loss(compute, draw_noise)


def smld_loss_fn(
    sde: VESDE,
    apply_fn: ApplyFn,
    train: bool = True,
    reduce_mean: bool = False,
    extra_variables: Mapping[str, Any] | None = None,
) -> Loss:
    """NCSN loss: sigma_i^2 |s(x0 + sigma_i z, i) + z / sigma_i|^2 with i uniform over levels.

    Label i indexes the descending noise levels (label 0 is sigma_max), as the NCSN networks do.
    """
    if sde.discrete_chain != "smld":
        raise ValueError(f"The SMLD loss needs a VESDE, got {type(sde).__name__}.")
    sigmas_desc = jnp.asarray(sde.discrete_sigmas[::-1].copy())
    reduce = _reduce_fn(reduce_mean)

    def compute(params, batch, level_noise, k_drop):
        x0, labels = batch["image"], level_noise["labels"]
        sigmas = batch_broadcast(sigmas_desc[labels], x0)
        noise = level_noise["z"] * sigmas
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

    return Loss(compute, functools.partial(_draw_level_noise, sde.N))


def ddpm_loss_fn(
    sde: VPSDE,
    apply_fn: ApplyFn,
    train: bool = True,
    reduce_mean: bool = True,
    extra_variables: Mapping[str, Any] | None = None,
) -> Loss:
    """DDPM loss: |eps_theta(sqrt(abar_i) x0 + sqrt(1 - abar_i) z, i) - z|^2, i uniform."""
    if sde.discrete_chain != "ddpm":
        raise ValueError(f"The DDPM loss needs a VPSDE, got {type(sde).__name__}.")
    sqrt_abar = jnp.asarray(sde.sqrt_alphas_cumprod)
    sqrt_1m_abar = jnp.asarray(sde.sqrt_1m_alphas_cumprod)
    reduce = _reduce_fn(reduce_mean)

    def compute(params, batch, level_noise, k_drop):
        x0, labels, noise = batch["image"], level_noise["labels"], level_noise["z"]
        x_t = (
            batch_broadcast(sqrt_abar[labels], x0) * x0
            + batch_broadcast(sqrt_1m_abar[labels], x0) * noise
        )
        out = apply_fn(
            _variables(params, extra_variables), x_t, labels, train=train, rngs={"dropout": k_drop}
        )
        losses = reduce(jnp.square(out - noise))
        return jnp.mean(losses), {"per_example": losses}

    return Loss(compute, functools.partial(_draw_level_noise, sde.N))


def _draw_level_noise(num_levels: int, key: jax.Array, x0: jax.Array) -> dict:
    """A uniform discrete noise level [B] and standard normal noise like x0."""
    k_i, k_z = jax.random.split(key)
    labels = jax.random.randint(k_i, (x0.shape[0],), 0, num_levels)
    return {"labels": labels, "z": jax.random.normal(k_z, x0.shape)}


# The discrete objective of each SDE's discrete chain (SDE.discrete_chain).
DISCRETE_LOSSES: dict[str, Callable[..., Loss]] = {"smld": smld_loss_fn, "ddpm": ddpm_loss_fn}


def get_loss_fn(
    sde: SDE,
    apply_fn: ApplyFn,
    train: bool,
    reduce_mean: bool = False,
    continuous: bool = True,
    likelihood_weighting: bool = False,
    importance_weighting: bool = False,
) -> Loss:
    """The loss the official configs select: continuous DSM, or SMLD (VE) / DDPM (VP) discrete;
    `importance_weighting` draws the likelihood-weighted loss's times by importance sampling."""
    if continuous:
        return sde_loss_fn(
            sde,
            apply_fn,
            train,
            reduce_mean,
            True,
            likelihood_weighting,
            importance_weighting=importance_weighting,
        )
    if likelihood_weighting or importance_weighting:
        raise ValueError(
            "likelihood_weighting and importance_weighting are only defined for continuous "
            "training."
        )
    if sde.discrete_chain not in DISCRETE_LOSSES:
        raise ValueError(
            f"Discrete training is not defined for {type(sde).__name__}: only VE (SMLD) and VP "
            "(DDPM) have a discrete chain, sub-VP has none; use continuous=True."
        )
    return DISCRETE_LOSSES[sde.discrete_chain](sde, apply_fn, train, reduce_mean)
