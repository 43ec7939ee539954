"""Predictors: one reverse-time step from t to t - 1/N of a predictor-corrector sampler.

Every predictor has the signature
    predictor(key, sde, score_fn, x, t, probability_flow) -> (x_next, x_next_mean)
with x [B, ...] and t [B]; `x_next_mean` is the step without its fresh noise, which the sampler
returns at the end when denoising. The dict `PREDICTORS` maps config names to these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_jax.sde import SDE, ScoreFn, batch_broadcast

Predictor = Callable[..., tuple[jax.Array, jax.Array]]


def euler_maruyama(
    key: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool
) -> tuple[jax.Array, jax.Array]:
    """Euler-Maruyama step of the reverse SDE with dt = -T/N (the official dt = -1/N, T = 1)."""
    dt = -sde.T / sde.N
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    x_mean = x + drift * dt
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + batch_broadcast(diffusion, x) * jnp.sqrt(-dt) * noise, x_mean


def reverse_diffusion(
    key: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool
) -> tuple[jax.Array, jax.Array]:
    """Runs the forward discretisation x_{i+1} = x_i + f + G z backwards: x - f_rev + G z."""
    f, G = sde.reverse(score_fn, probability_flow).discretize(x, t)
    x_mean = x - f
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + batch_broadcast(G, x) * noise, x_mean


def ancestral_sampling(
    key: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool
) -> tuple[jax.Array, jax.Array]:
    """The posterior step of the discrete chain: SMLD's for VE, DDPM's for VP (paper, App. F)."""
    check_ancestral(sde, probability_flow)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return sde.ancestral_step(x, score_fn(x, t), t, noise)


def check_ancestral(sde: SDE, probability_flow: bool) -> None:
    """Ancestral sampling exists only for the two discrete chains (SMLD = VE, DDPM = VP)."""
    if sde.discrete_chain is None:
        raise ValueError(
            "predictor 'ancestral_sampling' is defined only for VESDE (SMLD) and VPSDE (DDPM), "
            f"got {type(sde).__name__}; use 'reverse_diffusion' or 'euler_maruyama' instead."
        )
    if probability_flow:
        raise ValueError("predictor 'ancestral_sampling' does not support probability_flow=True.")


def no_predictor(
    key: jax.Array, sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool
) -> tuple[jax.Array, jax.Array]:
    """Leaves x unchanged (corrector-only samplers such as SMLD's annealed Langevin dynamics)."""
    del key, sde, score_fn, t, probability_flow
    return x, x


PREDICTORS: dict[str, Predictor] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral_sampling": ancestral_sampling,
    "none": no_predictor,
}
