"""Reverse-SDE sampling with diffrax solvers against the exact mixture score."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from test_sampling_stats import COUNTER, NUM_SAMPLES, counted_score, exact_score, mixture_failures

from score_jax.sampling import SDE_SOLVERS, get_sampler, sde_sample
from score_jax.sde import VESDE, VPSDE, SubVPSDE

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}
SHAPE = (NUM_SAMPLES, 2)
STEPS = 200  # enough for Euler-Maruyama on this mixture (bias far below the sampling error)

# (SDE, solver, adaptive tolerance or None): Euler-Maruyama, and the strong order 1.5
# additive-noise solver SRA1 with fixed and with adaptive steps; each SDE at least once. (Heun
# shares all code paths with SRA1; each diffrax SDE program takes ~10 s to compile on a loaded
# 2-core machine.)
CASES = [
    ("ve", "euler", None),
    ("subvp", "euler", None),
    ("subvp", "sra1", None),
    ("vp", "sra1", 1e-2),
]


def run_sde(sde_name, solver, tol, key=4):
    sde = SDES[sde_name]
    COUNTER["runs"] = 0
    x, nfe = sde_sample(
        jax.random.key(key), counted_score(sde), sde, SHAPE, solver, STEPS, rtol=tol, atol=tol
    )
    jax.block_until_ready(x)
    return x, int(nfe), COUNTER["runs"]


@pytest.mark.parametrize(("sde_name", "solver", "tol"), CASES)
def test_sde_samples_match_mixture_and_nfe_counts_evaluations(sde_name, solver, tol):
    x, nfe, evaluations = run_sde(sde_name, solver, tol)
    assert mixture_failures(x) == []
    assert nfe == evaluations
    if tol is None:
        assert nfe == SDE_SOLVERS[solver][1] * STEPS


def test_second_call_does_not_retrace():
    x1, _, _ = run_sde("ve", "euler", None, key=4)
    traces = COUNTER["traces"]
    x2, _, _ = run_sde("ve", "euler", None, key=5)
    assert COUNTER["traces"] == traces
    assert not np.allclose(x1, x2)


def test_broken_sde_fails_the_checks():
    """Reverse drift f - g^2 s / 2 (a missing factor 2) with the SDE's noise: too wide."""
    sde = SDES["vp"]
    score = exact_score(sde)
    x, _ = sde_sample(jax.random.key(4), lambda y, t: 0.5 * score(y, t), sde, SHAPE, "euler", STEPS)
    assert mixture_failures(x) != []


def test_get_sampler_sde_method_equals_sde_sample():
    config = ml_collections.ConfigDict()
    config.sampling = dict(method="sde", sde_solver="euler", sde_steps=STEPS, noise_removal=False)
    sde = SDES["ve"]
    x, nfe = get_sampler(config, sde, SHAPE, eps=1e-3)(jax.random.key(4), counted_score(sde))
    y, _, _ = run_sde("ve", "euler", None, key=4)
    np.testing.assert_array_equal(x, y)
    assert int(nfe) == STEPS


def test_bad_input():
    sde = SDES["vp"]
    score = exact_score(sde)
    with pytest.raises(ValueError, match="unknown SDE solver 'milstein'.*'euler', 'heun', 'sra1'"):
        sde_sample(jax.random.key(0), score, sde, (4, 2), "milstein")
    with pytest.raises(ValueError, match="'euler' has no error estimate"):
        sde_sample(jax.random.key(0), score, sde, (4, 2), "euler", rtol=1e-3, atol=1e-3)
    config = ml_collections.ConfigDict()
    config.sampling = dict(method="sde", sde_solver="rk4", sde_steps=None, noise_removal=False)
    with pytest.raises(ValueError, match="config.sampling.sde_solver"):
        get_sampler(config, sde, (4, 2))
