"""EDM's Heun sampler (Karras et al., NeurIPS 2022, Algorithms 1 and 2) for VE, VP and sub-VP.

EDM writes the probability-flow ODE in the scaled variable x~ = x_t / alpha_t and the noise level
sigma~ = sigma_t / alpha_t = exp(-lambda(t)) (`sde.edm_sigma`): from x_t = alpha_t x_0 + sigma_t z
and the ODE dx/dt = (d log(alpha)/dt) x + sigma^2 (d lambda/dt) score (see dpm_solver.py),

    dx~/dsigma~ = (x~ - D) / sigma~,    D(x~; sigma~) = E[x_0 | x_t] = (x + sigma_t^2 s) / alpha_t

(s the score at x = alpha_t x~) for any (alpha, sigma) pair: VE directly (alpha = 1), VP and
sub-VP through this change of variables, the time of each level given by `sde.t_from_edm_sigma`.
The sampler takes Heun steps in sigma~ on EDM's grid (rho = 7 by default). With s_churn > 0
(Algorithm 2) each step whose level lies in [s_tmin, s_tmax] first raises it to
sigma^ = (1 + gamma) sigma~, gamma = min(s_churn / (number of steps), sqrt(2) - 1), by adding
fresh noise of std s_noise sqrt(sigma^^2 - sigma~^2); sigma^ is capped at the level of T, where
the model was trained.

`steps` counts score evaluations: steps // 2 Heun steps, and for odd steps a last Euler step,
as EDM's own 2N - 1 (its last step, to sigma = 0, is the Euler step).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.sampling.schedules import check_schedule, time_grid
from score_jax.sde import SDE, ScoreFn


def _denoise(score_fn: ScoreFn, sde: SDE, x_scaled: jax.Array, t: jax.Array) -> jax.Array:
    """D(x~; sigma~(t)) = E[x_0 | x_t = alpha_t x~] at scalar time t."""
    x = sde.alpha_sigma(t)[0] * x_scaled
    times = jnp.full((x.shape[0],), t, x.dtype)
    return sde.data_prediction(x, times, score_fn(x, times))


def _churn(sde, x, key, s_cur, t_cur, *, gamma, s_tmin, s_tmax, s_noise, s_top):
    """Algorithm 2's noise increase: (x at sigma^, sigma^, its time)."""
    gamma = jnp.where((s_cur >= s_tmin) & (s_cur <= s_tmax), gamma, 0.0)
    s_hat = jnp.minimum(s_cur * (1.0 + gamma), s_top)
    t_hat = jnp.where(s_hat > s_cur, sde.t_from_edm_sigma(s_hat), t_cur)
    noise = jax.random.normal(key, x.shape, x.dtype)
    x = x + s_noise * jnp.sqrt(jnp.maximum(s_hat**2 - s_cur**2, 0.0)) * noise
    return x, s_hat, t_hat


def _step(score_fn, sde, x, key, grid, heun, churn):
    """One step from level s_cur to s_next (grid = (s_cur, s_next, t_cur, t_next)): Euler, then
    Heun's trapezoidal correction when `heun`; churn is None or _churn's options."""
    s_cur, s_next, t_cur, t_next = grid
    if churn is None:
        s_hat, t_hat = s_cur, t_cur
    else:
        x, s_hat, t_hat = _churn(sde, x, key, s_cur, t_cur, **churn)
    d = (x - _denoise(score_fn, sde, x, t_hat)) / s_hat
    x_next = x + (s_next - s_hat) * d
    if heun:
        d_next = (x_next - _denoise(score_fn, sde, x_next, t_next)) / s_next
        x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
    return x_next


@functools.partial(
    jax.jit,
    static_argnames=(
        "score_fn",
        "sde",
        "shape",
        "steps",
        "schedule",
        "rho",
        "eps",
        "denoise",
        "churn",
    ),
)
def _heun_sample(key, z, *, score_fn, sde, shape, steps, schedule, rho, eps, denoise, churn):
    k_prior, k_churn = jax.random.split(key)
    x = sde.prior_sampling(k_prior, shape) if z is None else z
    n_heun, n_euler = divmod(steps, 2)
    ts = time_grid(sde, schedule, n_heun + n_euler, eps, x.dtype, rho)
    sigmas = sde.edm_sigma(ts)
    if churn is not None:
        churn = dict(churn, s_top=sigmas[0])
    x = x / sde.alpha_sigma(ts[0])[0]
    grid = (sigmas[:-1], sigmas[1:], ts[:-1], ts[1:])

    def body(x, i):
        g = tuple(a[i] for a in grid)
        return _step(score_fn, sde, x, jax.random.fold_in(k_churn, i), g, True, churn), None

    x, _ = jax.lax.scan(body, x, jnp.arange(n_heun))
    if n_euler:
        g = tuple(a[n_heun] for a in grid)
        x = _step(score_fn, sde, x, jax.random.fold_in(k_churn, n_heun), g, False, churn)
    if denoise:
        return _denoise(score_fn, sde, x, ts[-1])
    return sde.alpha_sigma(ts[-1])[0] * x


def check_heun_options(steps: int, schedule: str, s_churn: float, s_noise: float) -> None:
    """Clear errors for bad sampler options, before anything is compiled."""
    if not (isinstance(steps, int | np.integer) and steps >= 1):
        raise ValueError(f"heun: steps (config.sampling.steps) must be an int >= 1, got {steps!r}")
    check_schedule(schedule)
    if not s_churn >= 0:
        raise ValueError(f"heun: s_churn (config.sampling.s_churn) must be >= 0, got {s_churn!r}")
    if not s_noise >= 0:
        raise ValueError(f"heun: s_noise (config.sampling.s_noise) must be >= 0, got {s_noise!r}")


def heun_sample(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    steps: int = 35,
    schedule: str = "edm",
    rho: float = 7.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    eps: float = 1e-3,
    z: jax.Array | None = None,
    denoise: bool = False,
) -> tuple[jax.Array, int]:
    """Samples x [shape] with EDM's Heun sampler spending `steps` score evaluations, from latents
    z (default: a prior draw) at T to eps; stochastic when s_churn > 0 (s_tmin, s_tmax in units
    of sigma~). denoise returns D at eps (one more evaluation). Returns (x, nfe)."""
    check_heun_options(steps, schedule, s_churn, s_noise)
    shape = tuple(int(d) for d in shape)
    if z is not None and tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)}, expected shape {shape}")
    steps = int(steps)
    churn = None
    if s_churn > 0:
        n_steps = (steps + 1) // 2
        gamma = min(float(s_churn) / n_steps, math.sqrt(2.0) - 1.0)
        churn = (
            ("gamma", gamma),
            ("s_tmin", float(s_tmin)),
            ("s_tmax", float(s_tmax)),
            ("s_noise", float(s_noise)),
        )
    x = _heun_sample(
        key,
        z,
        score_fn=score_fn,
        sde=sde,
        shape=shape,
        steps=steps,
        schedule=schedule,
        rho=float(rho),
        eps=float(eps),
        denoise=bool(denoise),
        churn=churn,
    )
    return x, steps + bool(denoise)
