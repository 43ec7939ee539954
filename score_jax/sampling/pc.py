"""Predictor-corrector sampling (Song et al. 2021, Algorithm 1) as one compiled program.

At each of the N times linspace(T, eps, N) the sampler runs the corrector (n_steps Langevin
steps at that time) and then the predictor (one reverse-time step). The two classic samplers are
special cases: SMLD's annealed Langevin dynamics is predictor 'none' + corrector 'ald', DDPM's
ancestral sampling is predictor 'ancestral_sampling' + corrector 'none'.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from score_jax.sampling.correctors import CORRECTORS, Corrector, no_corrector
from score_jax.sampling.predictors import (
    PREDICTORS,
    Predictor,
    ancestral_sampling,
    check_ancestral,
    no_predictor,
)
from score_jax.sde import SDE, ScoreFn

# project(key, x, x_mean, t) -> (x, x_mean): a constraint applied after each PC step.
Projection = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# Samplers run in at most this many compiled chunks when a progress bar is shown.
PROGRESS_CHUNKS = 50


def resolve_predictor(predictor: str | Predictor) -> Predictor:
    """The predictor function for a config name (a callable is passed through)."""
    if callable(predictor):
        return predictor
    if predictor not in PREDICTORS:
        raise ValueError(
            f"unknown predictor {predictor!r} (config.sampling.predictor); "
            f"valid names: {sorted(PREDICTORS)}"
        )
    return PREDICTORS[predictor]


def resolve_corrector(corrector: str | Corrector) -> Corrector:
    """The corrector function for a config name (a callable is passed through)."""
    if callable(corrector):
        return corrector
    if corrector not in CORRECTORS:
        raise ValueError(
            f"unknown corrector {corrector!r} (config.sampling.corrector); "
            f"valid names: {sorted(CORRECTORS)}"
        )
    return CORRECTORS[corrector]


def pc_nfe(sde: SDE, predictor: Predictor, corrector: Corrector, n_steps: int) -> int:
    """Score evaluations of a PC run: N (1 + n_steps) when both parts are active. (The official
    code reports N (n_steps + 1) even when the predictor or corrector is 'none'.)"""
    per_level = (predictor is not no_predictor) + (corrector is not no_corrector) * n_steps
    return sde.N * per_level


_STATIC = (
    "score_fn",
    "sde",
    "predictor",
    "corrector",
    "snr",
    "n_steps",
    "probability_flow",
    "eps",
    "axis_name",
    "project",
)


def _pc_steps(
    key,
    x,
    start,
    *,
    num,
    masked,
    score_fn,
    sde,
    predictor,
    corrector,
    snr,
    n_steps,
    probability_flow,
    eps,
    axis_name,
    project,
):
    """PC steps start, ..., start + num - 1 from state x; returns (x, x_mean) after the last.

    Step i uses time linspace(T, eps, N)[i] and the key fold_in(key, i), so running the steps in
    chunks gives the same samples as one run. With `masked`, steps i >= N are skipped. With
    `project`, the corrector's result is projected at t_i and the predictor's at t_{i+1}
    (0 after the last step)."""
    timesteps = jnp.linspace(sde.T, eps, sde.N, dtype=x.dtype)

    def step(carry, i):
        x, _ = carry
        t = jnp.full((x.shape[0],), timesteps[jnp.minimum(i, sde.N - 1)], x.dtype)
        step_key = jax.random.fold_in(key, i)
        k_corrector, k_predictor = jax.random.split(step_key)
        x, x_mean = corrector(k_corrector, sde, score_fn, x, t, snr, n_steps, axis_name)
        if project is not None:
            x, x_mean = project(jax.random.fold_in(step_key, 2), x, x_mean, t)
        x, x_mean = predictor(k_predictor, sde, score_fn, x, t, probability_flow)
        if project is not None:
            landed = jnp.where(i + 1 < sde.N, timesteps[jnp.minimum(i + 1, sde.N - 1)], 0.0)
            t_next = jnp.full_like(t, landed)
            x, x_mean = project(jax.random.fold_in(step_key, 3), x, x_mean, t_next)
        return x, x_mean

    def body(carry, i):
        if masked:
            return jax.lax.cond(i < sde.N, step, lambda c, _: c, carry, i), None
        return step(carry, i), None

    steps = start + jnp.arange(num, dtype=jnp.int32)
    (x, x_mean), _ = jax.lax.scan(body, (x, x), steps)
    return x, x_mean


_pc_chunk = jax.jit(_pc_steps, static_argnames=("num", "masked", *_STATIC))


@functools.partial(jax.jit, static_argnames=("shape", "denoise", *_STATIC))
def _pc_whole(key, *, shape, denoise, **kwargs):
    x, k_steps = _prior(key, shape=shape, sde=kwargs["sde"], project=kwargs["project"])
    x, x_mean = _pc_steps(k_steps, x, 0, num=kwargs["sde"].N, masked=False, **kwargs)
    return x_mean if denoise else x


@functools.partial(jax.jit, static_argnames=("shape", "sde", "project"))
def _prior(key, *, shape, sde, project=None):
    k_prior, k_steps = jax.random.split(key)
    x = sde.prior_sampling(k_prior, shape)
    if project is not None:
        t = jnp.full((shape[0],), sde.T, x.dtype)
        x, _ = project(jax.random.fold_in(k_prior, 1), x, x, t)
    return x, k_steps


def pc_sample(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    predictor: str | Predictor = "reverse_diffusion",
    corrector: str | Corrector = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float = 1e-3,
    progress: bool = False,
    axis_name: str | None = None,
    project: Projection | None = None,
) -> tuple[jax.Array, int]:
    """Samples x [shape] from the model by predictor-corrector sampling; returns (x, nfe).

    predictor / corrector: names in PREDICTORS / CORRECTORS (or such functions). denoise returns
    the last predictor step without its noise. The run is one compiled program, cached on
    (score_fn, sde, shape, options): call it again with the same score_fn object and it does not
    retrace. axis_name: the mapped batch axis when called inside shard_map (see `langevin`).
    progress=True runs it in up to PROGRESS_CHUNKS compiled chunks (the same program
    each time) with a progress bar between them; it cannot be used under an outer jax.jit.
    project(key, x, x_mean, t) -> (x, x_mean), when given, constrains the state after the prior
    draw and after every corrector and predictor step (t: the state's time [B]); inpainting and
    colorization (`score_jax.controllable`) replace the known part of x with it.
    """
    predictor_fn = resolve_predictor(predictor)
    corrector_fn = resolve_corrector(corrector)
    if predictor_fn is ancestral_sampling:
        check_ancestral(sde, probability_flow)
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(
            f"n_steps (config.sampling.n_steps_each) must be an int >= 1, got {n_steps!r}"
        )
    options = dict(
        score_fn=score_fn,
        sde=sde,
        predictor=predictor_fn,
        corrector=corrector_fn,
        snr=float(snr),
        n_steps=n_steps,
        probability_flow=bool(probability_flow),
        eps=float(eps),
        axis_name=axis_name,
        project=project,
    )
    nfe = pc_nfe(sde, predictor_fn, corrector_fn, n_steps)
    shape = tuple(int(d) for d in shape)
    if not progress:
        return _pc_whole(key, shape=shape, denoise=bool(denoise), **options), nfe
    return _pc_in_chunks(key, shape, bool(denoise), options), nfe


def _pc_in_chunks(key: jax.Array, shape: tuple[int, ...], denoise: bool, options: dict):
    """pc_sample's progress mode: the same steps in up to PROGRESS_CHUNKS compiled calls (one
    program, reused) with a progress bar between them; x [shape]."""
    if isinstance(key, jax.core.Tracer):
        raise ValueError(
            "pc_sample(progress=True) runs compiled chunks from Python and cannot be traced "
            "inside jax.jit; use progress=False there."
        )
    sde = options["sde"]
    x, k_steps = _prior(key, shape=shape, sde=sde, project=options["project"])
    chunk = math.ceil(sde.N / min(PROGRESS_CHUNKS, sde.N))
    masked = sde.N % chunk != 0
    with tqdm(total=sde.N, desc="sampling", unit="step") as bar:
        for start in range(0, sde.N, chunk):
            x, x_mean = _pc_chunk(k_steps, x, start, num=chunk, masked=masked, **options)
            x.block_until_ready()
            bar.update(min(chunk, sde.N - start))
    return x_mean if denoise else x
