"""The reverse-time SDE dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar solved with diffrax.

diffrax's Brownian paths run forwards in time, so the reverse SDE is written in s = T - t, which
runs from 0 to T - eps:  dx = -[f - g^2 score](x, T - s) ds + g(T - s) dW_s  (dW_s is again a
Brownian motion). The noise is additive (g depends on t only), so Ito and Stratonovich solutions
agree and the Stratonovich solvers Heun and SRA1 converge to the right law. The Brownian motion is
a VirtualBrownianTree: a pure function of the key, so the same key gives the same path at any
step size.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import lineax

from score_jax.sampling.predictors import reverse_diffusion
from score_jax.sde import SDE, ScoreFn, batch_broadcast

# name -> (solver class, score evaluations per step, needs space-time Levy area, has error estimate)
SDE_SOLVERS: dict[str, tuple[type, int, bool, bool]] = {
    "euler": (diffrax.Euler, 1, False, False),  # Euler-Maruyama, strong order 0.5 (1 here)
    "heun": (diffrax.Heun, 2, False, True),  # strong order 1 for additive noise
    "sra1": (diffrax.SRA1, 2, True, True),  # Roessler's SRA1 for additive noise, strong order 1.5
}

# Resolution of the Brownian tree relative to the (initial) step size.
_TREE_TOL_FRACTION = 1 / 16


def check_sde_solver(solver: str, adaptive: bool) -> None:
    if solver not in SDE_SOLVERS:
        raise ValueError(
            f"unknown SDE solver {solver!r} (config.sampling.sde_solver); "
            f"valid names: {sorted(SDE_SOLVERS)}"
        )
    if adaptive and not SDE_SOLVERS[solver][3]:
        raise ValueError(
            f"SDE solver {solver!r} has no error estimate, so it cannot take adaptive steps "
            f"(rtol/atol given); use one of "
            f"{sorted(k for k, v in SDE_SOLVERS.items() if v[3])} or fixed steps."
        )


@functools.partial(
    jax.jit,
    static_argnames=(
        "score_fn",
        "sde",
        "shape",
        "solver",
        "n_steps",
        "eps",
        "rtol",
        "atol",
        "denoise",
        "max_steps",
    ),
)
def _sde_sample(key, *, score_fn, sde, shape, solver, n_steps, eps, rtol, atol, denoise, max_steps):
    k_prior, k_brownian, k_denoise = jax.random.split(key, 3)
    x = sde.prior_sampling(k_prior, shape)
    reverse = sde.reverse(score_fn)
    T = sde.T

    def time(s, y):
        return jnp.full((y.shape[0],), T - s, y.dtype)

    def drift(s, y, args):
        return -reverse.sde(y, time(s, y))[0]

    def diffusion(s, y, args):
        g = sde.sde(y, time(s, y))[1]
        return lineax.DiagonalLinearOperator(jnp.broadcast_to(batch_broadcast(g, y), y.shape))

    cls, evals_per_step, needs_levy_area, _ = SDE_SOLVERS[solver]
    ds = (T - eps) / n_steps
    brownian = diffrax.VirtualBrownianTree(
        0.0,
        T - eps,
        tol=ds * _TREE_TOL_FRACTION,
        shape=jax.ShapeDtypeStruct(shape, x.dtype),
        key=k_brownian,
        levy_area=diffrax.SpaceTimeLevyArea if needs_levy_area else diffrax.BrownianIncrement,
    )
    if rtol is None:
        # Exactly n_steps steps on a fixed grid that ends at T - eps (no rounding remainder).
        controller = diffrax.StepTo(ts=jnp.linspace(0.0, T - eps, n_steps + 1))
        dt0 = None
    else:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = ds
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    solution = diffrax.diffeqsolve(
        terms,
        cls(),
        t0=0.0,
        t1=T - eps,
        dt0=dt0,
        y0=x,
        stepsize_controller=controller,
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    x = solution.ys[0]
    nfe = evals_per_step * solution.stats["num_steps"]
    if denoise:
        t = jnp.full((x.shape[0],), eps, x.dtype)
        _, x = reverse_diffusion(k_denoise, sde, score_fn, x, t, False)
        nfe = nfe + 1
    return x, nfe


def sde_sample(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    solver: str = "euler",
    n_steps: int = 1000,
    eps: float = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
    denoise: bool = False,
    max_steps: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Samples x [shape] by solving the reverse SDE from T to eps with a diffrax solver (a name
    in SDE_SOLVERS). Fixed steps of (T - eps) / n_steps, or adaptive steps from that initial size
    when rtol and atol are given (the Brownian tree resolves 1/16 of the initial step; smaller
    adaptive steps see its Brownian-bridge interpolation, so pick n_steps accordingly).
    denoise adds a noise-free reverse-diffusion step at eps.
    Returns (x, nfe), nfe the number of score evaluations (an int32 array)."""
    adaptive = rtol is not None or atol is not None
    check_sde_solver(solver, adaptive)
    if adaptive and (rtol is None or atol is None):
        raise ValueError(
            f"sde_sample: give both rtol and atol for adaptive steps, got {rtol=}, {atol=}"
        )
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(f"sde_sample: n_steps must be an int >= 1, got {n_steps!r}")
    if max_steps is None:
        max_steps = n_steps if not adaptive else 16 * n_steps
    return _sde_sample(
        key,
        score_fn=score_fn,
        sde=sde,
        shape=tuple(int(d) for d in shape),
        solver=solver,
        n_steps=n_steps,
        eps=float(eps),
        rtol=None if rtol is None else float(rtol),
        atol=None if atol is None else float(atol),
        denoise=bool(denoise),
        max_steps=max_steps,
    )
