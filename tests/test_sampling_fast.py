"""The fast samplers (DPM-Solver, DPM-Solver++ 2M, EDM's Heun) against exact mixture scores.

Ground truth: the SDEs' kernel identities in closed form, the order of convergence towards a
tight diffrax solve of the probability-flow ODE from the same latents (float64), and the energy
distance to exact mixture draws compared with the 1000-step PC sampler's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh
from test_sampling_stats import (
    COUNTER,
    MIXTURE,
    counted_score,
    exact_samples,
    exact_score,
    mixture_failures,
)

from score_jax.sampling import (
    dpm_solver_pp_sample,
    dpm_solver_sample,
    get_sampler,
    heun_sample,
    ode_sample,
    pc_sample,
    sharded_sampler,
    time_grid,
)
from score_jax.sampling.dpm_solver import singlestep_orders
from score_jax.sde import VESDE, VPSDE, SubVPSDE
from score_jax.toy import GaussianMixture

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}
EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}

# The convergence tests use a smoother mixture than MIXTURE (stds 0.5-0.6, not 0.3), so that
# the step counts below are already in the asymptotic regime of each solver.
SMOOTH = GaussianMixture(
    means=jnp.array([[1.5, 0.0], [-1.0, 1.0]]),
    stds=jnp.array([0.6, 0.5]),
    weights=jnp.array([0.6, 0.4]),
)


def test_sde_kernel_identities():
    """alpha_sigma is marginal_prob's pair; lambda and sigma~ invert; f = d log(alpha)/dt and
    g^2 = -2 sigma^2 d(lambda)/dt on each SDE's own drift and diffusion (what the exponential
    integrators assume, sub-VP included); data_prediction is Tweedie's closed form."""
    with jax.enable_x64(True):
        t = jnp.linspace(1e-5, 1.0, 9)
        for sde in SDES.values():
            alpha, sigma = sde.alpha_sigma(t)
            mean, std = sde.marginal_prob(jnp.ones((9, 1)), t)
            np.testing.assert_allclose(alpha, mean[:, 0], rtol=1e-12)
            np.testing.assert_allclose(sigma, std, rtol=1e-9)
            np.testing.assert_allclose(sde.log_snr(t), jnp.log(alpha / sigma), rtol=1e-9)
            np.testing.assert_allclose(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9)
            np.testing.assert_allclose(sde.t_from_edm_sigma(sde.edm_sigma(t)), t, rtol=1e-9)
            f = jax.vmap(jax.grad(lambda s, sde=sde: jnp.log(sde.alpha_sigma(s)[0])))(t)
            dlam = jax.vmap(jax.grad(sde.log_snr))(t)
            drift, g = sde.sde(jnp.ones((9, 1)), t)
            np.testing.assert_allclose(drift[:, 0], f, rtol=1e-9)
            np.testing.assert_allclose(g**2, -2 * sigma**2 * dlam, rtol=1e-9)
            # One Gaussian N(m, s^2): E[x0 | x_t] = m + alpha s^2 (x_t - alpha m) / var_t.
            gm = GaussianMixture(jnp.array([[0.7, -1.2]]), jnp.array([0.4]), jnp.array([1.0]))
            x = jax.random.normal(jax.random.key(0), (9, 2), jnp.float64)
            var = (alpha * 0.4) ** 2 + sigma**2
            expected = gm.means + (alpha * 0.16 / var)[:, None] * (x - alpha[:, None] * gm.means)
            x0 = sde.data_prediction(x, t, gm.score_fn(sde)(x, t))
            np.testing.assert_allclose(x0, expected, rtol=1e-9, atol=1e-12)


def test_time_grids():
    with jax.enable_x64(True):
        sde, n, eps = SDES["vp"], 8, 1e-3
        for name in ("logsnr", "time_uniform", "time_quadratic", "edm"):
            t = time_grid(sde, name, n, eps, jnp.float64)
            assert t.shape == (n + 1,) and t[0] == 1.0 and t[-1] == eps
            assert bool(jnp.all(jnp.diff(t) < 0)), name
        uniform_in = {
            "logsnr": sde.log_snr,
            "time_uniform": lambda t: t,
            "time_quadratic": jnp.sqrt,
            "edm": lambda t: sde.edm_sigma(t) ** (1 / 7),
        }
        for name, fn in uniform_in.items():
            steps = jnp.diff(fn(time_grid(sde, name, n, eps, jnp.float64)))
            np.testing.assert_allclose(steps, steps[0], rtol=1e-8, err_msg=name)


def test_singlestep_orders_are_the_papers_split():
    assert singlestep_orders(20, 3, True) == (3,) * 6 + (2,)
    assert singlestep_orders(21, 3, True) == (3,) * 6 + (2, 1)
    assert singlestep_orders(10, 3, True) == (3,) * 3 + (1,)
    assert singlestep_orders(3, 3, True) == (2, 1)
    assert singlestep_orders(7, 2, True) == (2, 2, 2, 1)
    assert singlestep_orders(12, 3, False) == (3,) * 4
    for steps in range(1, 30):
        for order in (1, 2, 3):
            assert sum(singlestep_orders(steps, order, True)) == steps


def _slope(sample, reference, steps):
    """Least-squares slope of log RMS error against log steps."""
    errors = [float(jnp.sqrt(jnp.mean((sample(n) - reference) ** 2))) for n in steps]
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0]), errors


# solver -> (sample(key, score, sde, z, eps, steps), steps (NFE), theoretical order)
SOLVERS = {
    # A time_quadratic grid, so that r = h_prev / h != 1 and the multistep weights matter.
    "dpm_solver++(2M)": (
        lambda k, s, sde, z, eps, n: dpm_solver_pp_sample(
            k, s, sde, z.shape, steps=n, eps=eps, z=z, schedule="time_quadratic"
        ),
        (24, 48, 96),
        2,
    ),
    "heun": (
        lambda k, s, sde, z, eps, n: heun_sample(k, s, sde, z.shape, steps=n, eps=eps, z=z),
        (32, 64, 128),
        2,
    ),
    "dpm_solver-3": (
        lambda k, s, sde, z, eps, n: dpm_solver_sample(
            k, s, sde, z.shape, steps=n, order=3, lower_order_final=False, eps=eps, z=z
        ),
        (48, 96, 192),
        3,
    ),
}


@pytest.mark.parametrize("sde_name", list(SDES))
def test_convergence_order(sde_name):
    """Final samples approach a tight ODE solve from the same latents at the solver's order:
    the fitted slope of log error vs log steps is within 0.3 of -order. (Errors fall from ~1e-2
    to ~1e-5, far above the reference's ~1e-9 at rtol = atol = 1e-10 in float64.)"""
    sde, eps = SDES[sde_name], EPS[sde_name]
    with jax.enable_x64(True):
        score = SMOOTH.score_fn(sde)
        z = sde.prior_sampling(jax.random.key(0), (64, 2))
        reference, _ = ode_sample(
            jax.random.key(0), score, sde, z.shape, 1e-10, 1e-10, eps=eps, z=z,
            solver="dopri5", max_steps=100_000,
        )  # fmt: skip
        key = jax.random.key(1)
        for name, (run, steps, order) in SOLVERS.items():
            slope, errors = _slope(
                lambda n, run=run: run(key, score, sde, z, eps, n)[0], reference, steps
            )
            assert abs(slope + order) < 0.3, (name, slope, errors)


def test_first_order_solver_measures_first_order():
    """The same measurement tells a first-order solver (DPM-Solver++ at order 1, i.e. DDIM)
    from a second-order one: what a first-order bug in a solver would show."""
    sde, eps = SDES["vp"], EPS["vp"]
    with jax.enable_x64(True):
        score = SMOOTH.score_fn(sde)
        z = sde.prior_sampling(jax.random.key(0), (64, 2))
        reference, _ = ode_sample(
            jax.random.key(0), score, sde, z.shape, 1e-10, 1e-10, eps=eps, z=z,
            solver="dopri5", max_steps=100_000,
        )  # fmt: skip

        def ddim(n):
            return dpm_solver_pp_sample(jax.random.key(1), score, sde, z.shape, n, 1, eps=eps, z=z)

        slope, errors = _slope(lambda n: ddim(n)[0], reference, (16, 32, 64))
        assert abs(slope + 1) < 0.3, (slope, errors)


def _energy_distances(x, reference, batches):
    """Energy distance (V-statistic) of each of `batches` slices of x to the same slice of
    reference; returns (mean, standard error) over the slices."""
    x = np.asarray(x, np.float64).reshape(batches, -1, x.shape[-1])
    y = reference.reshape(batches, -1, reference.shape[-1])

    def mean_dist(a, b):
        return np.mean(np.sqrt(np.sum((a[:, None] - b[None]) ** 2, axis=-1)))

    values = [
        2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b) for a, b in zip(x, y, strict=True)
    ]
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(batches))


# VE and sub-VP run the same code as VP (their SDE methods are covered by the tests above).
@pytest.mark.parametrize(
    "sde_name",
    [
        "vp",
        pytest.param("ve", marks=pytest.mark.slow),
        pytest.param("subvp", marks=pytest.mark.slow),
    ],
)
def test_dpm_solver_pp_20_nfe_matches_the_mixture_as_well_as_pc_1000(sde_name):
    """DPM-Solver++(2M) in 20 score evaluations against the PC sampler's 1000 levels (2000
    evaluations, reverse diffusion + Langevin): the mean energy distance to exact draws over 5
    batches of 2000 is no larger than PC's plus 3 standard errors of the difference. Ten steps
    are measurably worse on this mixture (stds 0.3-0.4), so the comparison can fail."""
    sde, eps = SDES[sde_name], EPS[sde_name]
    batches, shape = 5, (10_000, 2)
    reference = exact_samples(MIXTURE, shape[0], 999)
    key = jax.random.key(0)
    score = exact_score(sde)
    pc, _ = pc_sample(key, score, sde, shape, eps=eps)
    fast, nfe = dpm_solver_pp_sample(key, score, sde, shape, steps=20, eps=eps)
    assert nfe == 20
    pc_ed, pc_se = _energy_distances(pc, reference, batches)
    fast_ed, fast_se = _energy_distances(fast, reference, batches)
    margin = 3 * np.hypot(pc_se, fast_se)
    assert fast_ed <= pc_ed + margin, (fast_ed, pc_ed, margin)
    if sde_name == "vp":
        coarse, _ = dpm_solver_pp_sample(key, score, sde, shape, steps=6, eps=eps)
        coarse_ed, coarse_se = _energy_distances(coarse, reference, batches)
        assert coarse_ed > pc_ed + 3 * np.hypot(pc_se, coarse_se), (coarse_ed, pc_ed)


def _config(**sampling) -> ml_collections.ConfigDict:
    from configs.defaults import get_default_configs

    config = get_default_configs()
    config.sampling.update(sampling)
    return config


@pytest.mark.parametrize(
    ("method", "options", "nfe"),
    [
        ("dpm_solver++", dict(steps=20), 21),
        ("dpm_solver", dict(steps=20, order=3), 21),
        ("dpm_solver", dict(steps=30, order=2, schedule="time_quadratic"), 31),
        ("heun", dict(steps=35), 36),
        ("heun", dict(steps=101, s_churn=10.0, noise_removal=False), 101),
    ],
)
def test_get_sampler_fast_methods_match_mixture_and_count_nfe(method, options, nfe):
    """Every fast method through its config name on VP, with the default noise_removal (one
    more evaluation): samples pass the mixture checks and nfe counts the score evaluations.
    Stochastic Heun takes more steps: its added noise is removed at first order only."""
    sde = SDES["vp"]
    COUNTER["runs"] = 0
    x, reported = get_sampler(_config(method=method, **options), sde, (2000, 2))(
        jax.random.key(2), counted_score(sde)
    )
    jax.block_until_ready(x)
    assert reported == nfe == COUNTER["runs"]
    assert mixture_failures(x) == []


def test_stochastic_heun_uses_its_noise():
    """s_churn > 0 draws fresh noise: other keys give other samples from the same latents,
    while the deterministic sampler ignores the key."""
    sde, score = SDES["ve"], exact_score(SDES["ve"])
    z = sde.prior_sampling(jax.random.key(0), (16, 2))

    def run(key, churn):
        return heun_sample(key, score, sde, z.shape, steps=9, s_churn=churn, eps=1e-5, z=z)[0]

    np.testing.assert_array_equal(run(jax.random.key(1), 0.0), run(jax.random.key(2), 0.0))
    assert float(jnp.max(jnp.abs(run(jax.random.key(1), 5.0) - run(jax.random.key(2), 5.0)))) > 0


def test_parameters_are_traced():
    """A score_fn built from traced parameters inside an outer jit compiles once for all values."""
    sde = SDES["vp"]
    sample_fn = get_sampler(_config(method="dpm_solver++", steps=5), sde, (8, 2))
    traces = []

    @jax.jit
    def sample(scale, key):
        traces.append(1)
        return sample_fn(key, lambda x, t: scale * exact_score(sde)(x, t))[0]

    a = sample(jnp.float32(1.0), jax.random.key(0))
    b = sample(jnp.float32(0.5), jax.random.key(0))
    assert len(traces) == 1
    assert float(jnp.max(jnp.abs(a - b))) > 0.01


def test_sharded_sampling_equals_one_device():
    """Under sharded_sampler the prior and the churn noise are drawn as global arrays split over
    the 4 devices, so the samples equal a one-device run with the same key."""
    sde, score = SDES["vp"], exact_score(SDES["vp"])
    sample_fn = get_sampler(_config(method="heun", steps=5, s_churn=5.0), sde, (16, 2))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x_sharded, nfe = sharded_sampler(sample_fn, mesh)(jax.random.key(4), score)
    x_single, _ = sample_fn(jax.random.key(4), score)
    assert len({s.device for s in x_sharded.addressable_shards}) == 4 and nfe == 6
    np.testing.assert_allclose(np.asarray(x_sharded), np.asarray(x_single), rtol=0, atol=1e-5)


def test_bad_config_fails_early():
    sde = SDES["vp"]
    with pytest.raises(ValueError, match="config.sampling.method must be one of.*'heun'"):
        get_sampler(_config(method="dpm"), sde, (4, 2))
    with pytest.raises(
        ValueError, match=r"order \(config.sampling.order\) must be one of \(1, 2\)"
    ):
        get_sampler(_config(method="dpm_solver++", order=3), sde, (4, 2))
    with pytest.raises(ValueError, match="unknown time schedule 'karras'"):
        get_sampler(_config(method="heun", schedule="karras"), sde, (4, 2))
    with pytest.raises(ValueError, match="steps .* must be an int >= 1, got 0"):
        get_sampler(_config(method="dpm_solver", steps=0), sde, (4, 2))
    with pytest.raises(ValueError, match="divisible by order; got steps=20, order=3"):
        get_sampler(_config(method="dpm_solver", order=3, lower_order_final=False), sde, (4, 2))
    with pytest.raises(ValueError, match="s_churn .* must be >= 0"):
        get_sampler(_config(method="heun", s_churn=-1.0), sde, (4, 2))
