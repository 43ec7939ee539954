"""DPM-Solver (Lu et al., NeurIPS 2022) and DPM-Solver++ 2M (Lu et al., 2022): exponential
integrators of the probability-flow ODE in log-SNR time, good samples in 10-20 score evaluations.

Every SDE here has a Gaussian perturbation kernel x_t = alpha_t x_0 + sigma_t z, and a linear SDE
is fixed by that pair: f = d log(alpha)/dt, g^2 = d(sigma^2)/dt - 2 f sigma^2 = -2 sigma^2
d(lambda)/dt with lambda = log(alpha_t / sigma_t). The probability-flow ODE
dx/dt = f x - g^2 score / 2 is therefore

    dx/dt = (d log(alpha)/dt) x + sigma^2 (d lambda/dt) score,

and variation of constants solves its linear part exactly, from s to t, in either form

    x_t = (alpha_t / alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^(-lambda) eps dlambda
    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^(lambda) x0 dlambda

with the noise prediction eps = -sigma_t score (DPM-Solver) or the data prediction
x0 = (x + sigma_t^2 score) / alpha_t (DPM-Solver++). Only sigma = alpha e^(-lambda) enters, never
alpha^2 + sigma^2 = 1, so the same solvers hold for VE (alpha = 1) and for sub-VP, whose
sigma = 1 - alpha^2. tests/test_sampling_fast.py checks the identities against each SDE's own
drift and diffusion, and the order of convergence on each.

The SDE supplies alpha, sigma, lambda and the inverse t(lambda) (`score_jax.sde`); the integrals
of the Taylor-expanded predictions are expm1 and phi_2(h) = expm1(h) / h - 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.sampling.schedules import check_schedule, time_grid
from score_jax.sde import SDE, ScoreFn

# Below this many steps DPM-Solver++ takes its last step at first order (the paper's "lower
# order final", which stabilises very short runs).
LOWER_ORDER_FINAL_BELOW = 15


def _times(x: jax.Array, t: jax.Array) -> jax.Array:
    return jnp.full((x.shape[0],), t, x.dtype)


def _noise_pred(score_fn: ScoreFn, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    """eps(x, t) = -sigma_t score(x, t) at scalar t."""
    return -sde.alpha_sigma(t)[1] * score_fn(x, _times(x, t))


def _data_pred(score_fn: ScoreFn, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    """x0(x, t) = (x + sigma_t^2 score(x, t)) / alpha_t at scalar t."""
    times = _times(x, t)
    return sde.data_prediction(x, times, score_fn(x, times))


def _ddim(sde: SDE, x: jax.Array, s: jax.Array, u: jax.Array, eps_s: jax.Array) -> jax.Array:
    """First-order (DDIM) step from s to u with the noise prediction eps_s held constant."""
    alpha_s = sde.alpha_sigma(s)[0]
    alpha_u, sigma_u = sde.alpha_sigma(u)
    h = sde.log_snr(u) - sde.log_snr(s)
    return (alpha_u / alpha_s) * x - sigma_u * jnp.expm1(h) * eps_s


def _phi2(h: jax.Array) -> jax.Array:
    return jnp.expm1(h) / h - 1.0


def singlestep(score_fn: ScoreFn, sde: SDE, x: jax.Array, s, t, order: int) -> jax.Array:
    """One DPM-Solver step of `order` score evaluations from time s to t (scalars): DPM-Solver-1
    (DDIM), -2 with r1 = 1/2, -3 with r1 = 1/3, r2 = 2/3 (the paper's Algorithms 1 and 2)."""
    lam_s = sde.log_snr(s)
    h = sde.log_snr(t) - lam_s
    eps_s = _noise_pred(score_fn, sde, x, s)
    x_t = _ddim(sde, x, s, t, eps_s)
    if order == 1:
        return x_t
    sigma_t = sde.alpha_sigma(t)[1]
    if order == 2:
        u = sde.t_from_log_snr(lam_s + 0.5 * h)
        d1 = _noise_pred(score_fn, sde, _ddim(sde, x, s, u, eps_s), u) - eps_s
        return x_t - sigma_t * jnp.expm1(h) * d1
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    u1 = sde.t_from_log_snr(lam_s + r1 * h)
    d1 = _noise_pred(score_fn, sde, _ddim(sde, x, s, u1, eps_s), u1) - eps_s
    u2 = sde.t_from_log_snr(lam_s + r2 * h)
    sigma_u2 = sde.alpha_sigma(u2)[1]
    x_u2 = _ddim(sde, x, s, u2, eps_s) - sigma_u2 * (r2 / r1) * _phi2(r2 * h) * d1
    d2 = _noise_pred(score_fn, sde, x_u2, u2) - eps_s
    return x_t - (sigma_t / r2) * _phi2(h) * d2


def singlestep_orders(steps: int, order: int, lower_order_final: bool) -> tuple[int, ...]:
    """Orders of the steps that spend `steps` score evaluations. With lower_order_final the
    paper's DPM-Solver-fast split (Sec. 3.4): K = steps // 3 + 1 steps of order 3 ending in
    (2, 1), (1) or (2) as steps % 3 is 0, 1 or 2, likewise for order 2; without it, steps / order
    steps all of `order` (steps must then be a multiple of order)."""
    if not lower_order_final:
        if steps % order:
            raise ValueError(
                f"dpm_solver with lower_order_final=False needs steps (score evaluations) "
                f"divisible by order; got steps={steps}, order={order}"
            )
        return (order,) * (steps // order)
    if order == 1:
        return (1,) * steps
    if order == 2:
        return (2,) * (steps // 2) + (1,) * (steps % 2)
    tail = {0: (2, 1), 1: (1,), 2: (2,)}[steps % 3]
    return (3,) * ((steps - sum(tail)) // 3) + tail


def _run_singlestep(score_fn, sde, x, ts, orders):
    """The steps ts[i] -> ts[i + 1] with orders[i]: the leading run of equal orders as one scan,
    the (at most two) lower-order steps after it unrolled."""
    n_main = next((i for i, o in enumerate(orders) if o != orders[0]), len(orders))

    def body(x, st):
        return singlestep(score_fn, sde, x, st[0], st[1], orders[0]), None

    x, _ = jax.lax.scan(body, x, (ts[:n_main], ts[1 : n_main + 1]))
    for i in range(n_main, len(orders)):
        x = singlestep(score_fn, sde, x, ts[i], ts[i + 1], orders[i])
    return x


def _run_multistep(score_fn, sde, x, ts, order, lower_order_final):
    """DPM-Solver++(2M): x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(-h) D with
    D = x0_s + (x0_s - x0_prev) / (2 r), r = h_prev / h. Step 0 (no history), every step at
    order 1, and the last step under lower_order_final take D = x0_s (DPM-Solver++(1) = DDIM)."""
    n = ts.shape[0] - 1
    second = np.full(n, float(order == 2))
    second[0] = 0.0
    if lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
        second[-1] = 0.0
    lams = sde.log_snr(ts)
    alphas, sigmas = sde.alpha_sigma(ts)

    def body(carry, i):
        x, x0_prev, h_prev = carry
        x0 = _data_pred(score_fn, sde, x, ts[i])
        h = lams[i + 1] - lams[i]
        d = x0 + (jnp.asarray(second, x.dtype)[i] * h / (2.0 * h_prev)) * (x0 - x0_prev)
        x = (sigmas[i + 1] / sigmas[i]) * x - alphas[i + 1] * jnp.expm1(-h) * d
        return (x, x0, h), None

    init = (x, jnp.zeros_like(x), jnp.ones((), x.dtype))
    (x, _, _), _ = jax.lax.scan(body, init, jnp.arange(n))
    return x


@functools.partial(
    jax.jit,
    static_argnames=(
        "score_fn",
        "sde",
        "shape",
        "multistep",
        "steps",
        "order",
        "schedule",
        "rho",
        "lower_order_final",
        "eps",
        "denoise",
    ),
)
def _dpm_sample(
    key,
    z,
    *,
    score_fn,
    sde,
    shape,
    multistep,
    steps,
    order,
    schedule,
    rho,
    lower_order_final,
    eps,
    denoise,
):
    k_prior, _ = jax.random.split(key)
    x = sde.prior_sampling(k_prior, shape) if z is None else z
    if multistep:
        ts = time_grid(sde, schedule, steps, eps, x.dtype, rho)
        x = _run_multistep(score_fn, sde, x, ts, order, lower_order_final)
    else:
        orders = singlestep_orders(steps, order, lower_order_final)
        ts = time_grid(sde, schedule, len(orders), eps, x.dtype, rho)
        x = _run_singlestep(score_fn, sde, x, ts, orders)
    if denoise:
        x = _data_pred(score_fn, sde, x, jnp.asarray(eps, x.dtype))
    return x


def check_dpm_options(steps: int, order: int, schedule: str, multistep: bool) -> None:
    """Clear errors for bad solver options, before anything is compiled."""
    name = "dpm_solver++" if multistep else "dpm_solver"
    if not (isinstance(steps, int | np.integer) and steps >= 1):
        raise ValueError(
            f"{name}: steps (config.sampling.steps) must be an int >= 1, got {steps!r}"
        )
    orders = (1, 2) if multistep else (1, 2, 3)
    if order not in orders:
        raise ValueError(
            f"{name}: order (config.sampling.order) must be one of {orders}, got {order!r}"
        )
    check_schedule(schedule)


def _sample(key, score_fn, sde, shape, z, **options):
    """Checks the options, runs the compiled sampler; returns (x, nfe)."""
    check_dpm_options(options["steps"], options["order"], options["schedule"], options["multistep"])
    shape = tuple(int(d) for d in shape)
    if z is not None and tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)}, expected shape {shape}")
    options.update(
        steps=int(options["steps"]),
        order=int(options["order"]),
        rho=float(options["rho"]),
        lower_order_final=bool(options["lower_order_final"]),
        eps=float(options["eps"]),
        denoise=bool(options["denoise"]),
    )
    if not options["multistep"]:  # checks divisibility by the order
        singlestep_orders(options["steps"], options["order"], options["lower_order_final"])
    x = _dpm_sample(key, z, score_fn=score_fn, sde=sde, shape=shape, **options)
    return x, options["steps"] + options["denoise"]


def dpm_solver_pp_sample(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    steps: int = 20,
    order: int = 2,
    schedule: str = "logsnr",
    rho: float = 7.0,
    lower_order_final: bool = True,
    eps: float = 1e-3,
    z: jax.Array | None = None,
    denoise: bool = False,
) -> tuple[jax.Array, int]:
    """Samples x [shape] with multistep DPM-Solver++ (order 2: 2M; order 1: DDIM) in `steps`
    steps of one score evaluation each, from latents z (default: a prior draw) at T to eps.
    denoise adds the data prediction at eps (one more evaluation). Returns (x, nfe)."""
    return _sample(
        key,
        score_fn,
        sde,
        shape,
        z,
        multistep=True,
        steps=steps,
        order=order,
        schedule=schedule,
        rho=rho,
        lower_order_final=lower_order_final,
        eps=eps,
        denoise=denoise,
    )


def dpm_solver_sample(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    steps: int = 20,
    order: int = 3,
    schedule: str = "logsnr",
    rho: float = 7.0,
    lower_order_final: bool = True,
    eps: float = 1e-3,
    z: jax.Array | None = None,
    denoise: bool = False,
) -> tuple[jax.Array, int]:
    """Samples x [shape] with singlestep DPM-Solver-`order` (1, 2 or 3) spending `steps` score
    evaluations (split into steps as `singlestep_orders` says), from latents z (default: a prior
    draw) at T to eps. denoise adds the data prediction at eps. Returns (x, nfe)."""
    return _sample(
        key,
        score_fn,
        sde,
        shape,
        z,
        multistep=False,
        steps=steps,
        order=order,
        schedule=schedule,
        rho=rho,
        lower_order_final=lower_order_final,
        eps=eps,
        denoise=denoise,
    )
