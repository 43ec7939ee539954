"""Probability-flow log-likelihood against the official code's numbers and closed forms.

Ground truth: `likelihood_gmm.npz` (the official `get_likelihood_fn` on an exact-score mixture,
with its recorded Hutchinson probes and the analytic log p_eps), and Gaussian mixtures of our
own whose perturbed densities are known in closed form (`score_jax.toy`).
"""

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_reference

from score_jax.likelihood import (
    augmented_drift,
    bits_per_dim,
    bpd_offset,
    check_unit_range,
    dequantize,
    log_likelihood,
)
from score_jax.sde import VESDE, VPSDE
from score_jax.toy import GaussianMixture

SDES = {"vp": VPSDE(0.1, 20.0), "ve": VESDE(0.01, 50.0)}
EPS = 1e-5


def _nhwc(a):
    return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def _official_vp_score_fn(gm: GaussianMixture, sde: VPSDE):
    """The score the official code saw for the fixture's VP mixture.

    Its module returned -std(t) * score with std in float64, and the official score_fn divides by
    std = sqrt(1 - exp(2 lmc)) computed in float32, which at t = 1e-5 is off by ~0.6% (the
    subtraction cancels). So the official drift used score * std_exact / std_float32; without
    this factor the two differ by ~1e-3 nats, with it by ~1e-5.
    """
    exact = gm.score_fn(sde)

    def score_fn(x, t):
        lmc = sde.log_mean_coeff(t)
        ratio = jnp.sqrt(-jnp.expm1(2 * lmc)) / jnp.sqrt(1 - jnp.exp(2 * lmc))
        return exact(x, t) * ratio.reshape((-1,) + (1,) * (x.ndim - 1))

    return score_fn


@pytest.fixture(scope="module")
def gmm():
    ref = load_reference("likelihood_gmm")
    mixture = GaussianMixture(ref["means"], jnp.full((2,), 0.3), jnp.ones((2,)))
    exact_scores = {name: mixture.score_fn(sde) for name, sde in SDES.items()}
    official_scores = {"vp": _official_vp_score_fn(mixture, SDES["vp"]), "ve": exact_scores["ve"]}
    return ref, exact_scores, official_scores


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_matches_official_with_recorded_probes(gmm, name):
    ref, _, official_scores = gmm
    x, score_fn, sde = _nhwc(ref["x"]), official_scores[name], SDES[name]
    probes = {h: _nhwc(ref[f"eps_noise_{h}"]) for h in ("gaussian", "rademacher")}
    for probe, noise in probes.items():
        nats, z, nfe = log_likelihood(jax.random.key(0), score_fn, sde, x, probe, noise=noise)
        # The same ODE, method, step control (scipy RK45 vs ours) and probes: measured
        # max |diff| ~1e-5 nats (float32 vs scipy's float64 state); the budget is 1e-3.
        np.testing.assert_allclose(nats, ref[f"{name}/{probe}/nats"], rtol=0, atol=1e-3)
        np.testing.assert_allclose(
            np.transpose(z, (0, 3, 1, 2)), ref[f"{name}/{probe}/z"], rtol=0, atol=1e-3
        )
        # Same steps: scipy counts 2 set-up evaluations, we count 3 (diffrax evaluates f(t0)
        # again after the initial step selection). Allow one step (6 evaluations) of slack.
        assert abs(int(nfe) - (int(ref[f"{name}/{probe}/nfe"]) + 1)) <= 6


@pytest.mark.parametrize("name, tol", [("vp", 2e-3), ("ve", 5e-3)])
def test_exact_trace_matches_analytic(gmm, name, tol):
    ref, exact_scores, _ = gmm
    nats, _, _ = log_likelihood(
        jax.random.key(0), exact_scores[name], SDES[name], _nhwc(ref["x"]), "exact"
    )
    # ODE output = log p_eps(x) + prior mismatch (2.2e-3 nats for VE, 1.8e-4 for VP) + solver
    # error at rtol = atol = 1e-5 (the official exact trace misses by 1.6e-4 / 2.4e-3 in all).
    np.testing.assert_allclose(nats, ref[f"{name}/analytic_logp_eps"], rtol=0, atol=tol)
    corrected = np.asarray(nats) + ref[f"{name}/exact_trace/prior_mismatch"]
    np.testing.assert_allclose(corrected, ref[f"{name}/analytic_logp_eps"], rtol=0, atol=1e-3)


@pytest.fixture(scope="module")
def own():
    # D = 3, three components with unequal weights and widths, data as [B, 3]: a different
    # dimension, layout and anisotropy of the Jacobian from the fixture's.
    gm = GaussianMixture(
        means=jnp.array([[1.0, 0.0, -1.0], [-1.5, 1.0, 0.5], [0.0, -1.2, 1.0]]),
        stds=jnp.array([0.2, 0.4, 0.3]),
        weights=jnp.array([0.5, 0.3, 0.2]),
    )
    x = gm.sample(jax.random.key(3), 8)
    scores = {name: gm.score_fn(sde) for name, sde in SDES.items()}
    return gm, x, scores


@pytest.mark.parametrize("name, tol", [("vp", 2e-3), ("ve", 5e-3)])
def test_exact_trace_on_own_mixture_matches_closed_form(own, name, tol):
    gm, x, scores = own
    sde = SDES[name]
    nats, z, _ = log_likelihood(jax.random.key(0), scores[name], sde, x, "exact", eps=EPS)
    # The ODE gives log p_eps(x) - log p_T(z) + prior_logp(z); add back the known mismatch.
    mismatch = gm.perturbed(sde, sde.T).log_prob(z) - sde.prior_logp(z)
    truth = gm.perturbed(sde, EPS).log_prob(x)
    np.testing.assert_allclose(np.asarray(nats) + mismatch, truth, rtol=0, atol=tol)
    # The mismatch is real and larger than the fixture's: measured max 2.8e-3 nats (VP) and
    # 8.0e-3 (VE) here, against 8e-5 / 2.3e-4 of error left after adding it back.
    assert 1e-4 < float(jnp.max(jnp.abs(mismatch))) < 2e-2


def test_rademacher_estimate_is_unbiased(own):
    gm, x, scores = own
    sde = SDES["vp"]
    exact, _, _ = log_likelihood(jax.random.key(0), scores["vp"], sde, x, "exact", eps=EPS)
    # 48 independent single-probe estimates per point, as one batch (rows do not interact).
    reps = 48
    tiled = jnp.tile(x, (reps, 1))
    single, _, _ = log_likelihood(jax.random.key(9), scores["vp"], sde, tiled, "rademacher")
    single = np.asarray(single).reshape(reps, -1)
    mean, sem = single.mean(axis=0), single.std(axis=0, ddof=1) / math.sqrt(reps)
    assert np.all(sem > 1e-3), sem  # the estimator really is noisy here
    # 8 points at 3 standard errors each: a false alarm has probability ~2% for a fixed seed.
    assert np.all(np.abs(mean - np.asarray(exact)) < 3 * sem), (mean, exact, sem)


def test_offset_convention():
    # (bits/dim of sampled data against its closed form, through dequantization and the ODE,
    # is in test_likelihood_cli.py.)
    assert bpd_offset(lambda v: v) == 8.0  # data in [0, 1]
    assert bpd_offset(lambda v: (v + 1) / 2) == 7.0  # data centred to [-1, 1]
    # Uniform 8-bit data costs exactly 8 bits/dim; its dequantized density is 1 on [0, 1]^D and
    # 2^-D on [-1, 1]^D, and both conventions say 8.
    shape = (2, 4, 4, 3)
    dim = 48
    uniform01 = jnp.zeros((2,))
    uniform_centred = jnp.full((2,), -dim * math.log(2))
    np.testing.assert_allclose(bits_per_dim(uniform01, shape, 8.0), 8.0, rtol=1e-6)
    np.testing.assert_allclose(bits_per_dim(uniform_centred, shape, 7.0), 8.0, rtol=1e-6)


def _count_primitives(jaxpr, name):
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _count_primitives(sub, name)
    return count


@pytest.mark.parametrize("hutchinson", ["rademacher", "exact"])
def test_one_forward_and_one_derivative_pass_per_evaluation(hutchinson):
    # A score with a marker: each forward pass has one `sin`, each derivative pass one `cos`.
    traces = []

    def score_fn(x, t):
        traces.append(1)
        return -x - 0.1 * jnp.sin(x) * t[:, None]

    x = jax.random.normal(jax.random.key(0), (4, 3))
    probes = None if hutchinson == "exact" else jnp.ones((2, 4, 3))
    field = augmented_drift(score_fn, SDES["vp"], hutchinson)
    jaxpr = jax.make_jaxpr(field)(jnp.float32(0.5), (x, jnp.zeros((4,))), probes).jaxpr
    assert len(traces) == 1  # traced once: the drift is reused, not recomputed for the divergence
    assert _count_primitives(jaxpr, "sin") == 1
    # One VJP (batched over the 2 probes), or one JVP batched over the D = 3 dimensions.
    assert _count_primitives(jaxpr, "cos") == 1
    if probes is not None:
        # Several probes: the mean of the single-probe estimates.
        probes = jax.random.normal(jax.random.key(1), (2, 4, 3))
        state, compiled = (x, jnp.zeros((4,))), jax.jit(field)
        _, both = compiled(jnp.float32(0.5), state, probes)
        singles = [compiled(jnp.float32(0.5), state, p[None])[1] for p in probes]
        np.testing.assert_allclose(both, (singles[0] + singles[1]) / 2, rtol=1e-5, atol=1e-6)


def test_reported_nfe_counts_evaluations_and_no_retrace():
    traces, executed = [], []

    def score_fn(x, t):
        traces.append(1)
        jax.debug.callback(lambda: executed.append(1))
        return -x - 0.1 * jnp.sin(x) * t[:, None]

    sde = SDES["vp"]  # the marker score is close to N(0, I)'s, which VP keeps in place
    x = jax.random.normal(jax.random.key(0), (4, 3))
    first, _, nfe = log_likelihood(jax.random.key(1), score_fn, sde, x)
    jax.effects_barrier()
    assert len(executed) == int(nfe) > 10
    n_traces = len(traces)
    second, _, _ = log_likelihood(jax.random.key(2), score_fn, sde, x + 0.5)
    assert len(traces) == n_traces  # same shapes and score_fn: the compiled solve is reused
    assert not np.allclose(first, second)


def test_rk45_takes_scipys_steps_including_rejections():
    from scipy.integrate import solve_ivp

    from score_jax import rk45

    # Van der Pol with mu = 8: fast and slow phases, so the controller both grows and rejects.
    def vdp(t, y):
        return [y[1], -y[0] + 8 * (1 - y[0] ** 2) * y[1]]

    tol, y0 = 1e-4, [2.0, 0.0]
    reference = solve_ivp(vdp, (0.0, 10.0), y0, rtol=tol, atol=tol, method="RK45")

    @jax.jit
    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: jnp.stack(vdp(t, y))),
            rk45.ScipyDopri5(),
            0.0,
            10.0,
            None,
            y0,
            stepsize_controller=rk45.ScipyRK45Controller(rtol=tol, atol=tol),
            saveat=diffrax.SaveAt(t1=True),
        )

    solution = solve(jnp.asarray(y0, jnp.float32))
    assert int(solution.stats["num_rejected_steps"]) > 5
    # Measured: the same 66 accepted steps and 477 = 476 + 1 evaluations (scipy shares f(t0)
    # between its start and the initial step choice, diffrax evaluates it again). Float32
    # rounding may move one step on other hardware; stock diffrax needs 81 steps here.
    assert abs(int(solution.stats["num_accepted_steps"]) - (len(reference.t) - 1)) <= 1
    nfe = int(rk45.count_evaluations(solution.stats["num_steps"]))
    assert abs(nfe - (reference.nfev + 1)) <= 6
    # Same steps, float32 against float64 arithmetic: measured 1e-6 apart at the end.
    np.testing.assert_allclose(solution.ys[0], reference.y[:, -1], rtol=0, atol=2e-5)


def test_dequantize_is_reproducible_and_in_the_bins():
    images = jnp.array(np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1))
    ids = jnp.arange(4)
    key = jax.random.key(7)
    x = np.asarray(dequantize(key, images, ids, repeat=0))
    k = np.asarray(images, np.float64)
    assert np.all(x >= k / 256) and np.all(x < (k + 1) / 256)
    # Same example id, same noise, wherever it sits in the batch.
    again = np.asarray(dequantize(key, images[::-1], ids[::-1], repeat=0))
    np.testing.assert_array_equal(again, x[::-1])
    other_pass = np.asarray(dequantize(key, images, ids, repeat=1))
    assert not np.allclose(other_pass, x)
    # u ~ U[0, 1): its mean over 256 values is 0.5 +- 0.018 (sd 1/sqrt(12 * 256)).
    assert abs((x * 256 - k).mean() - 0.5) < 0.06


def test_bad_input_is_refused():
    check_unit_range(np.zeros((2, 4, 4, 3), np.uint8))
    check_unit_range(np.full((2, 3), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\].*found values in \[0, 255\]"):
        check_unit_range(np.linspace(0, 255, 12, dtype=np.float32).reshape(2, 6))
    with pytest.raises(ValueError, match="uint8"):
        dequantize(jax.random.key(0), jnp.zeros((2, 3)), jnp.arange(2))
    sde, x = SDES["vp"], jnp.zeros((2, 3))
    score_fn = GaussianMixture(jnp.zeros((1, 3)), jnp.ones(1), jnp.ones(1)).score_fn(sde)
    with pytest.raises(ValueError, match="hutchinson"):
        log_likelihood(jax.random.key(0), score_fn, sde, x, "hutchinson_typo")
    with pytest.raises(ValueError, match="floating"):
        log_likelihood(jax.random.key(0), score_fn, sde, x.astype(jnp.uint8))
    with pytest.raises(ValueError, match="noise"):
        log_likelihood(jax.random.key(0), score_fn, sde, x, noise=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="noise must be None"):
        log_likelihood(jax.random.key(0), score_fn, sde, x, "exact", noise=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="x_shape"):
        bits_per_dim(jnp.zeros((2,)), (3,), 8.0)
