"""Correctors: Langevin MCMC steps towards p_t at a fixed time t of a predictor-corrector sampler.

Every corrector has the signature
    corrector(key, sde, score_fn, x, t, snr, n_steps, axis_name=None) -> (x_next, x_next_mean)
with x [B, ...] and t [B], and runs `n_steps` Langevin steps
    x <- x + h * score(x, t) + sqrt(2 h) z.
They differ in the step size h. `CORRECTORS` maps config names to these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_jax.sde import SDE, ScoreFn, batch_broadcast

Corrector = Callable[..., tuple[jax.Array, jax.Array]]


def discrete_alpha(sde: SDE, t: jax.Array) -> jax.Array:
    """The factor alpha_i = 1 - beta_i [B] of the DDPM chain at t, and 1 for VE
    (`SDE.discrete_alpha`)."""
    return sde.discrete_alpha(t)


def _per_example_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=-1))


def _langevin_loop(key, score_fn, x, t, n_steps, step_size_fn):
    """n_steps Langevin steps; step_size_fn(score, noise) -> h [B]."""

    def body(i, carry):
        x, _ = carry
        score = score_fn(x, t)
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        h = batch_broadcast(step_size_fn(score, noise), x)
        x_mean = x + h * score
        return x_mean + jnp.sqrt(2.0 * h) * noise, x_mean

    return jax.lax.fori_loop(0, n_steps, body, (x, x))


def langevin(
    key: jax.Array,
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    snr: float,
    n_steps: int,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Langevin corrector: h = 2 alpha (snr |z| / |score|)^2, the norms per example averaged
    over the whole batch. Under `jax.jit` with x sharded over devices the mean is already over
    the global batch (XLA adds the cross-device reduction); inside `shard_map` pass the mapped
    `axis_name` so that the local means are averaged over devices too."""
    alpha = discrete_alpha(sde, t)

    def global_mean(v):
        m = jnp.mean(v)
        return m if axis_name is None else jax.lax.pmean(m, axis_name)

    def step_size(score, noise):
        score_norm = global_mean(_per_example_norm(score))
        noise_norm = global_mean(_per_example_norm(noise))
        return 2.0 * alpha * (snr * noise_norm / score_norm) ** 2

    return _langevin_loop(key, score_fn, x, t, n_steps, step_size)


def ald(
    key: jax.Array,
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    snr: float,
    n_steps: int,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Annealed Langevin dynamics (NCSN): h = 2 alpha (snr std(t))^2, std(t) the marginal
    standard deviation, i.e. NCSN's step epsilon * sigma_i^2 / sigma_L^2 with
    epsilon = 2 (snr sigma_L)^2 for VE (alpha = 1), and alpha = alpha_i for VP.

    sub-VP (the official code crashes): its std 1 - a(t)^2 is the square of the VP std at the
    same t and gives steps so small at low noise that the chain freezes with the means still
    shrunk by a(t). So sub-VP takes the VP step, alpha = alpha_i / std(t), that is
    h = 2 alpha_i snr^2 (1 - a(t)^2). Per unit of local variance a^2 s^2 + (1 - a^2)^2 this step
    stays below snr^2 / s for data of per-direction std s (stable while that is below 2).
    """
    del axis_name  # the step size does not depend on the batch
    std = sde.marginal_prob(x, t)[1]
    h = 2.0 * sde.ald_alpha(t) * (snr * std) ** 2
    return _langevin_loop(key, score_fn, x, t, n_steps, lambda score, noise: h)


def no_corrector(
    key: jax.Array,
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    snr: float,
    n_steps: int,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Leaves x unchanged (predictor-only samplers such as DDPM's ancestral sampling)."""
    del key, sde, score_fn, t, snr, n_steps, axis_name
    return x, x


CORRECTORS: dict[str, Corrector] = {"langevin": langevin, "ald": ald, "none": no_corrector}
