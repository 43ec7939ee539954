"""Probability-flow ODE sampling and encoding (diffrax) against the exact mixture score.

Compilation dominates the run time here, so the tests share compiled solves: the mixture
tests start from explicit prior latents z, the same program that decodes encoded data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from test_sampling_stats import (
    COUNTER,
    MIXTURE,
    NUM_SAMPLES,
    counted_score,
    exact_samples,
    exact_score,
    mixture_failures,
)

from score_jax.sampling import get_sampler, ode_encode, ode_sample
from score_jax.sde import VESDE, VPSDE, SubVPSDE

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}
SHAPE = (NUM_SAMPLES, 2)


def decode(sde, z, tol=1e-5):
    """ode_sample from latents z with the counted exact score; returns (x, nfe, evaluations)."""
    COUNTER["runs"] = 0
    x, nfe = ode_sample(jax.random.key(0), counted_score(sde), sde, z.shape, tol, tol, z=z)
    jax.block_until_ready(x)
    return x, int(nfe), COUNTER["runs"]


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_ode_samples_match_mixture_and_nfe_counts_evaluations(sde_name):
    sde = SDES[sde_name]
    z = sde.prior_sampling(jax.random.key(2), SHAPE)
    x, nfe, evaluations = decode(sde, z)
    assert mixture_failures(x) == []
    assert nfe == evaluations


def test_broken_ode_fails_the_checks():
    """The drift f - g^2 s (the reverse SDE's, a factor 2 too much without its noise) collapses
    the components onto their modes."""
    sde = SDES["vp"]
    score = exact_score(sde)
    x, _ = ode_sample(jax.random.key(2), lambda y, t: 2.0 * score(y, t), sde, SHAPE)
    assert mixture_failures(x) != []


def test_encode_decode_roundtrip_latents_nfe_and_no_retrace():
    sde = SDES["vp"]
    data = jnp.asarray(exact_samples(MIXTURE, NUM_SAMPLES, 21), jnp.float32)
    scale = float(jnp.std(data))
    errors = {}
    for tol in (1e-3, 1e-4, 1e-5):
        COUNTER["runs"] = 0
        z, nfe = ode_encode(counted_score(sde), sde, data, rtol=tol, atol=tol)
        jax.block_until_ready(z)
        assert int(nfe) == COUNTER["runs"]
        x, nfe, evaluations = decode(sde, z, tol)
        assert nfe == evaluations
        errors[tol] = float(jnp.max(jnp.abs(x - data))) / scale
        if tol == 1e-3:
            traces = COUNTER["traces"]
    # Tolerances are traced arguments: changing them compiled nothing new.
    assert COUNTER["traces"] == traces
    assert errors[1e-5] < 5e-3, errors
    assert errors[1e-3] > errors[1e-4] > errors[1e-5], errors
    # VP latents of data are N(0, I): p_T is the prior up to a mean of a(T) m ~ 1e-2.
    for d in range(2):
        assert scipy.stats.kstest(np.asarray(z[:, d]), "norm").pvalue > 0.01
    # The same test rejects the data themselves, so it can fail.
    assert scipy.stats.kstest(np.asarray(data[:, 0]), "norm").pvalue < 0.01


def test_sharded_ode_from_fixed_latents_equals_one_device():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sde = SDES["vp"]
    z = sde.prior_sampling(jax.random.key(2), SHAPE)
    z_sharded = jax.device_put(z, NamedSharding(mesh, PartitionSpec("data")))
    x_sharded, nfe = ode_sample(jax.random.key(0), exact_score(sde), sde, SHAPE, z=z_sharded)
    assert len({s.device for s in x_sharded.addressable_shards}) == 4
    x_single, nfe_single, _ = decode(sde, z)
    # The step-size controller's error norm is summed in another order across devices, so
    # step sizes differ in their last bits and the solutions by up to the solver's local error
    # at rtol = atol = 1e-5 (seen: 7e-5 at a few points between components, where the flow
    # separates nearby latents).
    assert int(nfe) == nfe_single
    np.testing.assert_allclose(np.asarray(x_sharded), np.asarray(x_single), rtol=0, atol=2e-4)


def test_get_sampler_ode_with_denoising_matches_mixture():
    """sub-VP through get_sampler's 'ode' method: latents from the prior, and one more
    evaluation for the official final denoising step."""
    sde = SDES["subvp"]
    config = ml_collections.ConfigDict()
    config.sampling = dict(method="ode", rtol=1e-5, atol=1e-5, noise_removal=True)
    COUNTER["runs"] = 0
    x, nfe = get_sampler(config, sde, SHAPE)(jax.random.key(3), counted_score(sde))
    jax.block_until_ready(x)
    assert int(nfe) == COUNTER["runs"]
    assert mixture_failures(x) == []


def test_bad_input():
    sde = SDES["vp"]
    with pytest.raises(ValueError, match="unknown ODE solver 'rk45'.*'dopri5', 'tsit5'"):
        ode_sample(jax.random.key(0), exact_score(sde), sde, (4, 2), solver="rk45")
    with pytest.raises(ValueError, match="z has shape"):
        ode_sample(jax.random.key(0), exact_score(sde), sde, (4, 2), z=jnp.zeros((3, 2)))
