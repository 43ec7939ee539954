"""One config-driven sampler for training snapshots, `score-jax sample` and evaluation.

    sample_fn = get_sampler(config, sde, shape)
    x, nfe = sample_fn(key, score_fn)

`sample_fn` is pure and jit-able. To sample a global batch sharded over the mesh, jit the
caller with sharded outputs; the prior and all noise are then drawn as one global array split
over devices (threefry keys are partitionable), so each device gets different noise and the
samples equal those of a one-device run with the same key:

    @functools.partial(jax.jit, out_shardings=(NamedSharding(mesh, P("data")), None))
    def sample(params, key):
        return sample_fn(key, get_score_fn(sde, model, {"params": params}))

(`sharded_sampler` below does that for a fixed score_fn.) Inside `shard_map` instead, give each
device its own key and pass `axis_name` so that the Langevin step size uses the global batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from score_jax.sampling.dpm_solver import (
    check_dpm_options,
    dpm_solver_pp_sample,
    dpm_solver_sample,
    singlestep_orders,
)
from score_jax.sampling.edm import check_heun_options, heun_sample
from score_jax.sampling.ode import ode_sample
from score_jax.sampling.pc import pc_sample, resolve_corrector, resolve_predictor
from score_jax.sampling.predictors import ancestral_sampling, check_ancestral
from score_jax.sampling.sde_solve import check_sde_solver, sde_sample
from score_jax.sde import SDE, ScoreFn

SampleFn = Callable[[jax.Array, ScoreFn], tuple[jax.Array, jax.Array]]
METHODS = ("pc", "ode", "sde", "dpm_solver++", "dpm_solver", "heun")
# The fast samplers' time schedule when config.sampling.schedule is "default".
DEFAULT_SCHEDULES = {"dpm_solver++": "logsnr", "dpm_solver": "logsnr", "heun": "edm"}


def default_eps(sde: SDE) -> float:
    """The official sampling end time: 1e-5 for VE, 1e-3 for VP and sub-VP (run_lib.py)."""
    return sde.sampling_eps


def get_sampler(
    config,
    sde: SDE,
    shape: tuple[int, ...],
    eps: float | None = None,
    axis_name: str | None = None,
) -> SampleFn:
    """sample_fn(key, score_fn) -> (x [shape], nfe) as config.sampling says.

    Reads sampling.method ('pc' | 'ode' | 'sde' | 'dpm_solver++' | 'dpm_solver' | 'heun'); for
    'pc' predictor, corrector, snr, n_steps_each, probability_flow and noise_removal; for 'ode'
    rtol, atol and noise_removal; for 'sde' sde_solver, sde_steps (None: the SDE's N) and
    noise_removal; for the fast samplers see `fast_sampler`. eps defaults to
    `default_eps(sde)`. Names are checked here, so a bad config fails before any compilation.
    """
    s = config.sampling
    method = str(s.method).lower()
    eps = default_eps(sde) if eps is None else float(eps)
    shape = tuple(int(d) for d in shape)
    denoise = bool(s.noise_removal)
    if method == "pc":
        predictor = resolve_predictor(str(s.predictor).lower())
        corrector = resolve_corrector(str(s.corrector).lower())
        if predictor is ancestral_sampling:
            check_ancestral(sde, s.probability_flow)
        return functools.partial(
            pc_sample,
            sde=sde,
            shape=shape,
            predictor=predictor,
            corrector=corrector,
            snr=s.snr,
            n_steps=s.n_steps_each,
            probability_flow=s.probability_flow,
            denoise=denoise,
            eps=eps,
            axis_name=axis_name,
        )
    if method == "ode":
        rtol, atol = s.get("rtol", 1e-5), s.get("atol", 1e-5)
        return functools.partial(
            ode_sample, sde=sde, shape=shape, rtol=rtol, atol=atol, eps=eps, denoise=denoise
        )
    if method == "sde":
        steps = s.get("sde_steps", None) or sde.N
        solver = str(s.get("sde_solver", "euler")).lower()
        check_sde_solver(solver, adaptive=False)
        return functools.partial(
            sde_sample,
            sde=sde,
            shape=shape,
            solver=solver,
            n_steps=int(steps),
            eps=eps,
            denoise=denoise,
        )
    if method in DEFAULT_SCHEDULES:
        return fast_sampler(s, method, sde, shape, eps, denoise)
    raise ValueError(f"config.sampling.method must be one of {list(METHODS)}, got {s.method!r}")


def fast_sampler(s, method: str, sde: SDE, shape: tuple[int, ...], eps: float, denoise: bool):
    """The partial sampler of a fast method from config.sampling `s`: steps (score evaluations),
    order, schedule ('default' or a name in schedules.SCHEDULES), rho (of schedule 'edm'),
    lower_order_final (DPM-Solver), s_churn, s_tmin, s_tmax, s_noise (heun). noise_removal adds
    the data prediction at eps.
    """
    steps = s.get("steps", 20)
    schedule = str(s.get("schedule", "default")).lower()
    schedule = DEFAULT_SCHEDULES[method] if schedule == "default" else schedule
    common = dict(sde=sde, shape=shape, steps=steps, schedule=schedule, eps=eps, denoise=denoise)
    common["rho"] = float(s.get("rho", 7.0))
    if method == "heun":
        defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
        churn = {k: float(s.get(k, v)) for k, v in defaults.items()}
        check_heun_options(steps, schedule, churn["s_churn"], churn["s_noise"])
        return functools.partial(heun_sample, **churn, **common)
    multistep = method == "dpm_solver++"
    order = s.get("order", 2)
    check_dpm_options(steps, order, schedule, multistep)
    lower_order_final = bool(s.get("lower_order_final", True))
    if not multistep:
        singlestep_orders(steps, order, lower_order_final)  # steps divisible by order if needed
    fn = dpm_solver_pp_sample if multistep else dpm_solver_sample
    return functools.partial(fn, order=order, lower_order_final=lower_order_final, **common)


def sharded_sampler(sample_fn: SampleFn, mesh: Mesh, axis: str = "data"):
    """jit(sample_fn) with the samples sharded over `axis` of `mesh`: fn(key, score_fn)."""
    out = (NamedSharding(mesh, PartitionSpec(axis)), NamedSharding(mesh, PartitionSpec()))
    return jax.jit(sample_fn, static_argnums=1, out_shardings=out)
