"""Probability-flow ODE dx/dt = f(x, t) - g(t)^2 score(x, t) / 2, solved with diffrax.

`ode_sample` integrates it from T down to eps (from latents to data), `ode_encode` from eps up to
T (from data to latents), both with an adaptive Runge-Kutta solver (Tsit5 by default) and a PID
step-size controller. The error norm is taken over the whole batch, as scipy's solve_ivp does on
the flattened batch in the official code, so all examples share the step sizes.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp

from score_jax.sampling.predictors import reverse_diffusion
from score_jax.sde import SDE, ScoreFn

# Adaptive Runge-Kutta solvers and the new vector-field evaluations of each (accepted or rejected)
# step. Both are FSAL (first same as last): 7 stages, the first reusing the step before's last.
ODE_SOLVERS: dict[str, tuple[type, int]] = {
    "tsit5": (diffrax.Tsit5, 6),
    "dopri5": (diffrax.Dopri5, 6),
}
# Plus one evaluation at t0 that starts the chain (it also serves the initial step-size choice).
# Counted with a callback in the tests. diffrax repeats that evaluation when the very first step is
# rejected, which its stats cannot tell; in float32 we saw that only at tolerances below 1e-6.
_SETUP_NFE = 1


def _solver(name: str) -> tuple[diffrax.AbstractSolver, int]:
    if name not in ODE_SOLVERS:
        raise ValueError(f"unknown ODE solver {name!r}; valid names: {sorted(ODE_SOLVERS)}")
    cls, evals_per_step = ODE_SOLVERS[name]
    return cls(), evals_per_step


def _solve_flow(score_fn, sde, x, t0, t1, rtol, atol, solver, max_steps):
    """Integrates the probability-flow ODE from t0 to t1 (either direction); returns (x, nfe)."""
    flow = sde.reverse(score_fn, probability_flow=True)

    def vector_field(t, y, args):
        return flow.sde(y, jnp.full((y.shape[0],), t, y.dtype))[0]

    method, evals_per_step = _solver(solver)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        method,
        t0=t0,
        t1=t1,
        dt0=None,
        y0=x,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    nfe = _SETUP_NFE + evals_per_step * solution.stats["num_steps"]
    return solution.ys[0], nfe


# rtol and atol are traced, so changing the tolerances does not recompile.
_STATIC = ("score_fn", "sde", "eps", "solver", "max_steps")


@functools.partial(jax.jit, static_argnames=("shape", "denoise", *_STATIC))
def _ode_sample(key, z, rtol, atol, *, shape, denoise, score_fn, sde, eps, solver, max_steps):
    k_prior, k_denoise = jax.random.split(key)
    x = sde.prior_sampling(k_prior, shape) if z is None else z
    x, nfe = _solve_flow(score_fn, sde, x, sde.T, eps, rtol, atol, solver, max_steps)
    if denoise:
        # One reverse-diffusion step at eps without its noise, as the official ODE sampler.
        t = jnp.full((x.shape[0],), eps, x.dtype)
        _, x = reverse_diffusion(k_denoise, sde, score_fn, x, t, False)
        nfe = nfe + 1
    return x, nfe


def ode_sample(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    z: jax.Array | None = None,
    denoise: bool = False,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    """Samples x [shape] by solving the probability-flow ODE from T to eps, starting at latents z
    (default: a draw from the prior). Returns (x, nfe), nfe the exact number of score
    evaluations (an int32 array). Compiled once per (score_fn, sde, shape, options)."""
    shape = tuple(int(d) for d in shape)
    if z is not None and tuple(z.shape) != shape:
        raise ValueError(f"ode_sample: z has shape {tuple(z.shape)}, expected shape {shape}")
    _solver(solver)
    return _ode_sample(
        key,
        z,
        float(rtol),
        float(atol),
        shape=shape,
        denoise=bool(denoise),
        score_fn=score_fn,
        sde=sde,
        eps=float(eps),
        solver=solver,
        max_steps=int(max_steps),
    )


@functools.partial(jax.jit, static_argnames=_STATIC)
def _ode_encode(x, rtol, atol, *, score_fn, sde, eps, solver, max_steps):
    return _solve_flow(score_fn, sde, x, eps, sde.T, rtol, atol, solver, max_steps)


def ode_encode(
    score_fn: ScoreFn,
    sde: SDE,
    x: jax.Array,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    """Maps data x [B, ...] to latents z at time T by the probability-flow ODE from eps to T;
    returns (z, nfe). `ode_sample(..., z=z)` maps them back."""
    _solver(solver)
    return _ode_encode(
        x,
        score_fn=score_fn,
        sde=sde,
        rtol=float(rtol),
        atol=float(atol),
        eps=float(eps),
        solver=solver,
        max_steps=int(max_steps),
    )
