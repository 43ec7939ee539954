"""scipy's RK45 (`solve_ivp(method="RK45")`) as a diffrax solver and step-size controller.

The official code integrates its ODEs with scipy's RK45. diffrax's own Dopri5 + PIDController
differs from it in three ways that move a likelihood at tolerance 1e-5 by up to ~2e-3 nats:
diffrax estimates the local error with Shampine's embedded formula instead of Dormand and
Prince's 4th-order one; its PID controller never shrinks the step after an accepted step and
never caps the growth after a rejection; and it starts with a fixed first step of 0.01 instead of
Hairer's initial step selection. `ScipyDopri5` and `ScipyRK45Controller` reproduce scipy's choices,
so the two integrations take the same steps and agree to far below the tolerance.

Cost: the controller's initial step selection evaluates the vector field twice and the solver
then evaluates it once more at t0 (scipy shares that one), after which every attempted step costs
6 new evaluations (first-same-as-last).
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

# Dormand-Prince 5(4) weights: the 5th-order solution (propagated) and the embedded 4th order.
_B5 = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_B4 = np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])

_TABLEAU = diffrax.ButcherTableau(
    a_lower=(
        np.array([1 / 5]),
        np.array([3 / 40, 9 / 40]),
        np.array([44 / 45, -56 / 15, 32 / 9]),
        np.array([19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729]),
        np.array([9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]),
        _B5[:6],
    ),
    b_sol=_B5,
    b_error=_B5 - _B4,
    c=np.array([1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]),
)

# Evaluations before the first step: two for the initial step size, one for the solver's start.
SETUP_NFE = 3
EVALS_PER_STEP = 6

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0


class ScipyDopri5(diffrax.Dopri5):
    """Dopri5 whose error estimate is scipy's (original Dormand-Prince embedded 4th order)."""

    tableau = _TABLEAU


def _divide(a, b):
    return jax.tree.map(jnp.divide, a, b)


class ScipyRK45Controller(diffrax.PIDController):
    """scipy RK45's step control: Hairer's initial step, h *= clip(0.9 err^(-1/5), 0.2, 10),
    no growth on the step right after a rejection. The state is 'last attempt was rejected'."""

    def init(self, terms, t0, t1, y0, dt0, args, func: Callable, error_order):
        del dt0
        order = self._get_error_order(error_order)
        scale = jax.tree.map(lambda y: self.atol + jnp.abs(y) * self.rtol, y0)
        f0 = func(terms, t0, y0, args)
        d0 = self.norm(_divide(y0, scale))
        d1 = self.norm(_divide(f0, scale))
        h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
        h0 = jnp.minimum(h0, t1 - t0)
        y1 = jax.tree.map(lambda y, f: y + h0 * f, y0, f0)
        f1 = func(terms, t0 + h0, y1, args)
        d2 = self.norm(_divide(jax.tree.map(jnp.subtract, f1, f0), scale)) / h0
        d_max = jnp.maximum(d1, d2)
        h1 = jnp.where(
            d_max <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / d_max) ** (1.0 / order)
        )
        h = jax.lax.stop_gradient(jnp.minimum(jnp.minimum(100 * h0, h1), t1 - t0))
        return t0 + h, jnp.array(False)

    def adapt_step_size(
        self, t0, t1, y0, y1_candidate, args, y_error, error_order, rejected_before
    ):
        del args
        order = self._get_error_order(error_order)

        def scaled(a, b, e):
            return e / (self.atol + jnp.maximum(jnp.abs(a), jnp.abs(b)) * self.rtol)

        error = self.norm(jax.tree.map(scaled, y0, y1_candidate, y_error))
        # A step into NaN is rejected and shrunk as hard as allowed.
        error = jnp.where(jnp.isnan(error), jnp.inf, error)
        keep = error < 1
        proposal = SAFETY * error ** (-1.0 / order)
        grow = jnp.where(error == 0, MAX_FACTOR, jnp.minimum(MAX_FACTOR, proposal))
        grow = jnp.where(rejected_before, jnp.minimum(1.0, grow), grow)
        shrink = jnp.maximum(MIN_FACTOR, proposal)
        factor = jax.lax.stop_gradient(jnp.where(keep, grow, shrink))
        next_t0 = jnp.where(keep, t1, t0)
        next_t1 = next_t0 + (t1 - t0) * factor.astype(jnp.result_type(t1))
        return keep, next_t0, next_t1, False, ~keep, diffrax.RESULTS.successful


def count_evaluations(num_steps: jax.Array) -> jax.Array:
    """Vector-field evaluations of a solve with `ScipyDopri5` + `ScipyRK45Controller`."""
    return SETUP_NFE + EVALS_PER_STEP * num_steps
