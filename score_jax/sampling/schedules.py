"""Time grids of the fast samplers: n steps from T down to eps, spaced in one of four ways.

    logsnr          uniform in the log-SNR lambda(t) = log(alpha_t / sigma_t)   (DPM-Solver)
    time_uniform    uniform in t                                               (DPM-Solver)
    time_quadratic  uniform in sqrt(t)                                         (DPM-Solver)
    edm             uniform in sigma^(1/rho), sigma = exp(-lambda) (Karras et al., rho = 7)

Each is computed in lambda or sigma and mapped back to t through the SDE's own inverse
(`sde.t_from_log_snr`), so the same names serve VE, VP and sub-VP.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_jax.sde import SDE

SCHEDULES = ("logsnr", "time_uniform", "time_quadratic", "edm")


def check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(
            f"unknown time schedule {schedule!r} (config.sampling.schedule); "
            f"valid names: {list(SCHEDULES)} or 'default'"
        )


def time_grid(
    sde: SDE, schedule: str, n: int, eps: float, dtype=jnp.float32, rho: float = 7.0
) -> jax.Array:
    """Times t_0 = T > t_1 > ... > t_n = eps [n + 1] of an n-step sampler."""
    check_schedule(schedule)
    T = sde.T
    u = jnp.linspace(0.0, 1.0, n + 1, dtype=dtype)
    if schedule == "time_uniform":
        t = T + u * (eps - T)
    elif schedule == "time_quadratic":
        t = (T**0.5 + u * (eps**0.5 - T**0.5)) ** 2
    elif schedule == "logsnr":
        lam_T, lam_eps = (sde.log_snr(jnp.asarray(v, dtype)) for v in (T, eps))
        t = sde.t_from_log_snr(lam_T + u * (lam_eps - lam_T))
    else:
        s_max, s_min = (sde.edm_sigma(jnp.asarray(v, dtype)) for v in (T, eps))
        sigma = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        t = sde.t_from_edm_sigma(sigma)
    # The round trip through lambda is exact only up to rounding; the ends are exact by fiat.
    return t.at[0].set(T).at[-1].set(eps)
