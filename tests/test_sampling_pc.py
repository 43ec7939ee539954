"""Predictor-corrector samplers against the exact score of a 2-D Gaussian mixture.

Every (SDE, predictor, corrector) pair the paper uses must reproduce the mixture (checks and
tolerances in test_sampling_stats.py), deliberately broken variants must not, NFE must count
the score evaluations, and the compiled program must be reused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec
from test_sampling_stats import COUNTER, NUM_SAMPLES, counted_score, exact_score, mixture_failures

import score_jax.sampling.pc as pc_module
from score_jax.sampling import (
    CORRECTORS,
    PREDICTORS,
    euler_maruyama,
    get_sampler,
    langevin,
    pc_sample,
    reverse_diffusion,
    sharded_sampler,
)
from score_jax.sde import VESDE, VPSDE, SubVPSDE, batch_broadcast

SHAPE = (NUM_SAMPLES, 2)
# 300 noise levels keep the discretisation bias of the predictors far below the sampling error.
PC_SDES = {"ve": VESDE(N=300), "vp": VPSDE(N=300), "subvp": SubVPSDE(N=300)}
# Annealed Langevin needs many steps at the small noise levels to equilibrate. The VP time grid
# is uniform in t and so has few such levels; at N = 300 the final samples stay ~10% too wide.
ALD_SDES = {"ve": VESDE(N=300), "vp": VPSDE(N=1000), "subvp": SubVPSDE(N=300)}
# NCSN's step 2e-5 * sigma_i^2 / sigma_L^2 with sigma_L = 0.01. sub-VP takes the VP step (see
# correctors.ald), which relative to its local variance reaches snr^2 / s (0.33 here) rather than
# 2 snr^2; that Langevin bias shifts the component weights by ~8%, so sub-VP uses a smaller snr.
ALD_SNR = {"ve": 0.316, "vp": 0.316, "subvp": 0.2}
ALD_STEPS = 5


PC_CASES = [
    ("reverse_diffusion", "langevin"),
    ("euler_maruyama", "none"),
    ("ancestral_sampling", "none"),
    ("none", "ald"),
]


def run_pc(sde_name, predictor, corrector, key=1):
    """The sampler of the mixture tests; with the same arguments it reuses their compilation."""
    ald = corrector == "ald"
    sde = ALD_SDES[sde_name] if ald else PC_SDES[sde_name]
    sample = get_sampler(pc_config(predictor, corrector, sde_name), sde, SHAPE, eps=1e-3)
    return sde, sample(jax.random.key(key), counted_score(sde))


def pc_config(predictor, corrector, sde_name) -> ml_collections.ConfigDict:
    ald = corrector == "ald"
    return sampling_config(
        predictor=predictor,
        corrector=corrector,
        snr=ALD_SNR[sde_name] if ald else 0.16,
        n_steps_each=ALD_STEPS if ald else 1,
    )


@pytest.mark.parametrize("sde_name", list(PC_SDES))
@pytest.mark.parametrize(("predictor", "corrector"), PC_CASES)
def test_pc_samples_match_mixture(sde_name, predictor, corrector):
    """Through get_sampler, so the classic samplers are reached by their config names."""
    if predictor == "ancestral_sampling" and sde_name == "subvp":
        pytest.skip("ancestral sampling is undefined for sub-VP (test_bad_input checks the error)")
    COUNTER["runs"] = 0
    sde, (x, nfe) = run_pc(sde_name, predictor, corrector)
    assert mixture_failures(x) == []
    # PC: N (n_steps + 1) evaluations; N n_steps or N when one part is 'none'.
    per_level = {"langevin": 2, "none": 1, "ald": ALD_STEPS}[corrector]
    assert nfe == per_level * sde.N == COUNTER["runs"]


def test_second_call_does_not_retrace():
    sde, (x1, _) = run_pc("ve", "euler_maruyama", "none", key=1)
    traces = COUNTER["traces"]
    _, (x2, _) = run_pc("ve", "euler_maruyama", "none", key=2)
    x3, _ = pc_sample(jax.random.key(2), counted_score(sde), sde, SHAPE, "euler_maruyama", "none")
    assert COUNTER["traces"] == traces, "a call with the same arguments retraced"
    assert not np.allclose(x1, x2)
    np.testing.assert_array_equal(x2, x3)


# Deliberately broken samplers: each must fail the same checks.
def em_reverse_drift_missing_factor_2(key, sde, score_fn, x, t, probability_flow):
    """Reverse drift f - g^2 s / 2 (the ODE's) but with the SDE's noise: too wide."""
    return euler_maruyama(key, sde, lambda y, s: 0.5 * score_fn(y, s), x, t, probability_flow)


def reverse_diffusion_wrong_sign(key, sde, score_fn, x, t, probability_flow):
    return reverse_diffusion(key, sde, lambda y, s: -score_fn(y, s), x, t, probability_flow)


def ddpm_ancestral_without_rescaling(key, sde, score_fn, x, t, probability_flow):
    """DDPM's step without the division by sqrt(1 - beta_i): shrinks the samples."""
    beta = batch_broadcast(jnp.asarray(sde.discrete_betas)[sde.timestep(t)], x)
    x_mean = x + beta * score_fn(x, t)
    return x_mean + jnp.sqrt(beta) * jax.random.normal(key, x.shape), x_mean


def ald_noise_missing_factor_2(key, sde, score_fn, x, t, snr, n_steps, axis_name=None):
    """Langevin noise sqrt(h) z instead of sqrt(2h) z: samples p^2, half the variance."""
    h = batch_broadcast(2 * (snr * sde.marginal_prob(x, t)[1]) ** 2, x)
    for i in range(n_steps):
        x_mean = x + h * score_fn(x, t)
        x = x_mean + jnp.sqrt(h) * jax.random.normal(jax.random.fold_in(key, i), x.shape)
    return x, x_mean


BROKEN = {
    "euler_maruyama_missing_factor_2": ("vp", em_reverse_drift_missing_factor_2, "none"),
    "reverse_diffusion_wrong_sign": ("ve", reverse_diffusion_wrong_sign, "none"),
    "ancestral_vp_missing_rescaling": ("vp", ddpm_ancestral_without_rescaling, "none"),
    "ald_wrong_step_noise": ("ve", "none", ald_noise_missing_factor_2),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_pc_variants_fail_the_checks(name):
    sde_name, predictor, corrector = BROKEN[name]
    ald = corrector is ald_noise_missing_factor_2
    sde = ALD_SDES[sde_name] if ald else PC_SDES[sde_name]
    x, _ = pc_sample(
        jax.random.key(1),
        exact_score(sde),
        sde,
        SHAPE,
        predictor,
        corrector,
        snr=ALD_SNR[sde_name],
        n_steps=ALD_STEPS if ald else 1,
    )
    assert mixture_failures(x) != []


def test_progress_chunks_give_the_same_samples_without_retracing(capsys, monkeypatch):
    # 300 steps in 7 chunks of 43: the last chunk has one masked step.
    monkeypatch.setattr(pc_module, "PROGRESS_CHUNKS", 7)
    sde, (x_whole, _) = run_pc("ve", "euler_maruyama", "none", key=5)
    traces = COUNTER["traces"]
    COUNTER["runs"] = 0
    x_chunked, nfe = pc_sample(
        jax.random.key(5), counted_score(sde), sde, SHAPE, "euler_maruyama", "none", progress=True
    )
    np.testing.assert_allclose(x_chunked, x_whole, rtol=1e-5, atol=1e-5)
    assert COUNTER["runs"] == nfe == sde.N  # the masked step evaluates nothing
    # One trace of the chunk program (one score_fn trace), not one per chunk.
    assert COUNTER["traces"] == traces + 1
    assert "300/300" in capsys.readouterr().err


def sampling_config(**sampling) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.sampling = ml_collections.ConfigDict(
        dict(
            method="pc",
            predictor="reverse_diffusion",
            corrector="langevin",
            snr=0.16,
            n_steps_each=1,
            noise_removal=True,
            probability_flow=False,
        )
    )
    config.sampling.update(sampling)
    return config


def test_bad_input_fails_clearly():
    sde = PC_SDES["ve"]
    with pytest.raises(ValueError, match="unknown predictor 'langevin'.*euler_maruyama"):
        pc_sample(jax.random.key(0), exact_score(sde), sde, (4, 2), predictor="langevin")
    with pytest.raises(ValueError, match="unknown corrector 'reverse_diffusion'.*'ald'"):
        get_sampler(sampling_config(corrector="reverse_diffusion"), sde, (4, 2))
    subvp = PC_SDES["subvp"]
    with pytest.raises(ValueError, match="ancestral_sampling.*SubVPSDE"):
        pc_sample(jax.random.key(0), exact_score(subvp), subvp, (4, 2), "ancestral_sampling")
    with pytest.raises(ValueError, match="ancestral_sampling.*SubVPSDE"):
        get_sampler(
            sampling_config(predictor="ancestral_sampling", corrector="none"), subvp, (4, 2)
        )
    with pytest.raises(ValueError, match="sampling.method.*'pc', 'ode', 'sde'"):
        get_sampler(sampling_config(method="ddim"), sde, (4, 2))
    assert sorted(PREDICTORS) == [
        "ancestral_sampling",
        "euler_maruyama",
        "none",
        "reverse_diffusion",
    ]
    assert sorted(CORRECTORS) == ["ald", "langevin", "none"]


def test_sharded_sampling_draws_different_noise_per_device_and_equals_one_device():
    """jit with the samples sharded over 4 devices: different noise on every device, and the
    same samples as one device. This also shows that the Langevin norms are averaged over the
    global batch: per-device means would change the step sizes by a few % (500 points per
    device) and the samples by ~1e-3."""
    devices = jax.devices()
    assert len(devices) == 4, "conftest sets 4 CPU devices"
    mesh = Mesh(np.array(devices), ("data",))
    sde = PC_SDES["vp"]
    sample_fn = get_sampler(pc_config("reverse_diffusion", "langevin", "vp"), sde, SHAPE, 1e-3)
    x_sharded, nfe = sharded_sampler(sample_fn, mesh)(jax.random.key(9), exact_score(sde))
    assert x_sharded.sharding.spec == PartitionSpec("data")
    shards = [np.asarray(s.data) for s in x_sharded.addressable_shards]
    assert len(shards) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.min(np.abs(shards[i] - shards[j])) > 0, "two devices drew the same noise"
    _, (x_single, _) = run_pc("vp", "reverse_diffusion", "langevin", key=9)
    np.testing.assert_allclose(np.asarray(x_sharded), np.asarray(x_single), rtol=1e-4, atol=1e-4)
    assert int(nfe) == 2 * sde.N


def test_langevin_step_size_uses_the_global_batch_inside_shard_map():
    """Inside shard_map the local norm means would differ per device; with axis_name they are
    averaged over devices, so every device takes the step size of the global batch."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sde = VESDE(N=100)
    score_fn = exact_score(sde)
    # The devices hold points at scales 1, 3, 10 and 30: per-device score norms differ ~30x.
    scales = jnp.repeat(jnp.array([1.0, 3.0, 10.0, 30.0]), 4)[:, None]
    x = jax.random.normal(jax.random.key(0), (16, 2)) * scales
    t = jnp.full((16,), 0.8)  # sigma(t) = 9: steps move x by ~6%, no float32 cancellation
    key = jax.random.key(1)

    # Inside shard_map: recover each row's step size h from x_mean - x = h * score.
    def step_sizes(axis_name):
        def fn(x, t):
            key_d = jax.random.fold_in(key, jax.lax.axis_index("data"))
            x_mean = langevin(key_d, sde, score_fn, x, t, 0.16, 1, axis_name)[1]
            return jnp.mean((x_mean - x) / score_fn(x, t), axis=-1)

        spec = PartitionSpec("data")
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec), out_specs=spec)
        return np.asarray(jax.jit(mapped)(x, t)).reshape(4, 4)

    shared = step_sizes("data")
    np.testing.assert_allclose(shared, shared[0, 0], rtol=1e-3)
    # h = 2 (snr E|z| / mean |score|)^2 with E|z| = sqrt(pi / 2) for 2-D z; 16 noise draws
    # estimate E|z| to ~10%, so h to ~20%. Per-device means would make h ~100x larger on the
    # first device and ~10x smaller on the last.
    score_norm = np.mean(np.linalg.norm(np.asarray(score_fn(x, t)), axis=-1))
    expected_h = 2 * (0.16 * np.sqrt(np.pi / 2) / score_norm) ** 2
    np.testing.assert_allclose(shared[0, 0], expected_h, rtol=0.4)
