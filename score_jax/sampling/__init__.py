"""Samplers for score-based models: predictor-corrector, probability-flow ODE, reverse SDE, and
the fast ODE samplers DPM-Solver, DPM-Solver++ and EDM's Heun (10-35 score evaluations).

All take a plain `score_fn(x [B, ...], t [B]) -> score` and an SDE from `score_jax.sde`, run their
whole loop as one compiled program and return `(x, nfe)`.
"""

from score_jax.sampling.correctors import CORRECTORS, ald, langevin, no_corrector
from score_jax.sampling.dpm_solver import dpm_solver_pp_sample, dpm_solver_sample
from score_jax.sampling.edm import heun_sample
from score_jax.sampling.get_sampler import default_eps, get_sampler, sharded_sampler
from score_jax.sampling.ode import ODE_SOLVERS, ode_encode, ode_sample
from score_jax.sampling.pc import pc_sample
from score_jax.sampling.predictors import (
    PREDICTORS,
    ancestral_sampling,
    euler_maruyama,
    no_predictor,
    reverse_diffusion,
)
from score_jax.sampling.schedules import SCHEDULES, time_grid
from score_jax.sampling.sde_solve import SDE_SOLVERS, sde_sample

__all__ = [
    "CORRECTORS",
    "ODE_SOLVERS",
    "PREDICTORS",
    "SCHEDULES",
    "SDE_SOLVERS",
    "ald",
    "ancestral_sampling",
    "default_eps",
    "dpm_solver_pp_sample",
    "dpm_solver_sample",
    "euler_maruyama",
    "get_sampler",
    "heun_sample",
    "langevin",
    "no_corrector",
    "no_predictor",
    "ode_encode",
    "ode_sample",
    "pc_sample",
    "reverse_diffusion",
    "sde_sample",
    "sharded_sampler",
    "time_grid",
]
