"""The SDE library against Monte-Carlo simulation, the papers' discrete chains and scipy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from score_jax.sde import VESDE, VPSDE, SubVPSDE, batch_broadcast

SDES = {"ve": VESDE(0.01, 50.0, 1000), "vp": VPSDE(0.1, 20.0, 1000), "subvp": SubVPSDE(0.1, 20.0)}
CHECK_TIMES = (0.1, 0.4, 1.0)


def _simulate_forward(sde, x0, key, n_steps):
    """Euler-Maruyama paths of the forward SDE from t=0, recorded at CHECK_TIMES.

    The drift and diffusion are evaluated at the midpoint of each step, which removes the O(dt)
    bias of the left-point rule for these time-dependent coefficients.
    """
    dt = 1.0 / n_steps
    record_at = [round(t * n_steps) for t in CHECK_TIMES]

    def step(x, inputs):
        i, k = inputs
        t_mid = jnp.full((x.shape[0],), (i + 0.5) * dt)
        drift, diffusion = sde.sde(x, t_mid)
        x = (
            x
            + drift * dt
            + batch_broadcast(diffusion, x) * math.sqrt(dt) * jax.random.normal(k, x.shape)
        )
        return x, x

    keys = jax.random.split(key, n_steps)
    _, path = jax.lax.scan(step, x0, (jnp.arange(n_steps), keys))
    return [path[r - 1] for r in record_at]


@pytest.mark.parametrize("name", sorted(SDES))
def test_marginal_prob_matches_monte_carlo(name):
    sde = SDES[name]
    n_paths, dim, n_steps = 20_000, 4, 2000
    k0, k1 = jax.random.split(jax.random.PRNGKey(0))
    start = jnp.array([2.0, -1.0, 0.5, 0.0])
    x0 = jnp.broadcast_to(start, (n_paths, dim))
    if name == "ve":
        # The VE kernel N(x0, sigma(t)^2) is the SDE started from N(x0, sigma_min^2) at t=0.
        x0 = x0 + sde.sigma_min * jax.random.normal(k0, x0.shape)
    samples = jax.jit(lambda x, k: _simulate_forward(sde, x, k, n_steps))(x0, k1)
    for t, xs in zip(CHECK_TIMES, samples, strict=True):
        mean, std = sde.marginal_prob(start[None], jnp.array([t]))
        n = n_paths
        mc_mean, mc_std = jnp.mean(xs, axis=0), jnp.std(xs, axis=0)
        # Monte-Carlo standard errors: std/sqrt(n) for the mean, std/sqrt(2n) for the std;
        # 4.5 of them bounds all 4 dims x 3 times x 3 SDEs with overwhelming probability.
        np.testing.assert_allclose(mc_mean, mean[0], atol=4.5 * float(std[0]) / math.sqrt(n))
        np.testing.assert_allclose(
            mc_std, jnp.full(dim, std[0]), rtol=4.5 / math.sqrt(2 * n) + 2e-3
        )


def test_smld_discretization_is_the_ncsn_chain():
    sde = SDES["ve"]
    i = np.arange(sde.N)
    expected = 0.01 * (50.0 / 0.01) ** (i / (sde.N - 1))
    np.testing.assert_allclose(sde.discrete_sigmas, expected, rtol=1e-6)
    # t at the middle of each cell so that truncation picks index i unambiguously.
    t = jnp.asarray((i + 0.5) / (sde.N - 1), jnp.float32)[:-1]
    x = jnp.ones((t.shape[0], 2))
    f, G = sde.discretize(x, t)
    prev = np.concatenate([[0.0], expected[:-2]])
    np.testing.assert_array_equal(f, 0.0)
    np.testing.assert_allclose(G, np.sqrt(expected[:-1] ** 2 - prev**2), rtol=2e-5)


@pytest.mark.parametrize("N", [1000, 50])
def test_ddpm_discretization_is_the_ddpm_chain(N):
    sde = VPSDE(0.1, 20.0, N)
    betas = np.linspace(0.1 / N, 20.0 / N, N)
    np.testing.assert_allclose(sde.discrete_betas, betas, rtol=1e-6)
    np.testing.assert_allclose(sde.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-5)
    np.testing.assert_allclose(sde.sqrt_1m_alphas_cumprod, np.sqrt(1 - np.cumprod(1 - betas)), 1e-5)
    t = jnp.asarray((np.arange(N) + 0.5) / (N - 1), jnp.float32)[:-1]
    x = jnp.full((t.shape[0], 1), 3.0)
    f, G = sde.discretize(x, t)
    # f = sqrt(alpha) x - x cancels in float32: absolute error up to a few ulp of |x| = 3.
    np.testing.assert_allclose(f[:, 0], 3.0 * (np.sqrt(1 - betas[:-1]) - 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(G, np.sqrt(betas[:-1]), rtol=1e-6)
    # Iterating x_i = x_{i-1} + f + G z for all N levels gives the DDPM marginal
    # N(sqrt(abar) x0, 1 - abar): propagate mean and variance exactly.
    t_all = jnp.asarray((np.arange(N) + 0.5) / (N - 1), jnp.float32)
    t_all = jnp.minimum(t_all, 1.0)
    mean, var = 3.0, 0.0
    for ti in np.asarray(t_all):
        f, G = sde.discretize(jnp.ones((1, 1)), jnp.array([ti]))
        mean, var = mean * (1 + float(f[0, 0])), var * (1 + float(f[0, 0])) ** 2 + float(G[0]) ** 2
    abar = np.prod(1 - betas)
    np.testing.assert_allclose([mean, var], [3.0 * np.sqrt(abar), 1 - abar], rtol=1e-4)


def test_subvp_discretize_is_euler_maruyama():
    sde = SDES["subvp"]
    x, t = jnp.array([[1.0, -2.0]]), jnp.array([0.3])
    drift, diffusion = sde.sde(x, t)
    f, G = sde.discretize(x, t)
    np.testing.assert_allclose(f, drift / sde.N, rtol=1e-6)
    np.testing.assert_allclose(G, diffusion / math.sqrt(sde.N), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SDES))
def test_prior_logp_matches_scipy(name):
    sde = SDES[name]
    z = sde.prior_sampling(jax.random.PRNGKey(1), (5, 3, 2, 2))
    scale = 50.0 if name == "ve" else 1.0
    expected = scipy.stats.norm(0, scale).logpdf(np.asarray(z, np.float64)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(sde.prior_logp(z), expected, rtol=1e-6)
    assert (
        abs(float(jnp.std(sde.prior_sampling(jax.random.PRNGKey(2), (4000,)))) / scale - 1) < 0.05
    )


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_drift(name, probability_flow):
    sde = SDES[name]

    def score_fn(x, t):
        return jnp.sin(x) * (1 + t[:, None])

    x = jax.random.normal(jax.random.PRNGKey(3), (6, 3))
    t = jnp.linspace(0.05, 0.95, 6)
    rsde = sde.reverse(score_fn, probability_flow)
    weight = 0.5 if probability_flow else 1.0
    drift, diffusion = sde.sde(x, t)
    r_drift, r_diffusion = rsde.sde(x, t)
    np.testing.assert_allclose(
        r_drift, drift - weight * diffusion[:, None] ** 2 * score_fn(x, t), rtol=1e-6
    )
    np.testing.assert_allclose(r_diffusion, 0.0 if probability_flow else diffusion)
    f, G = sde.discretize(x, t)
    r_f, r_G = rsde.discretize(x, t)
    np.testing.assert_allclose(r_f, f - weight * G[:, None] ** 2 * score_fn(x, t), rtol=1e-6)
    np.testing.assert_allclose(r_G, 0.0 if probability_flow else G)


def test_equal_sdes_do_not_retrace_as_static_arguments():
    traces = []

    def prior_logp(sde, z):
        traces.append(type(sde).__name__)
        return sde.prior_logp(z)

    jitted = jax.jit(prior_logp, static_argnums=0)
    z = jnp.ones((2, 3))
    jitted(VPSDE(), z)
    jitted(VPSDE(), z + 1)  # a new but equal SDE hits the cache
    jitted(SubVPSDE(), z)  # equal fields, other class: compiled anew
    assert traces == ["VPSDE", "SubVPSDE"]


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: VESDE(sigma_min=60.0, sigma_max=50.0), "sigma_min"),
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VPSDE(beta_min=-0.1), "beta_min"),
        (lambda: SubVPSDE(beta_min=-1.0), "beta_min"),
        (lambda: VPSDE(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: VESDE(N=0), "N"),
        (lambda: VPSDE(N=0), "N"),
        (lambda: SubVPSDE(N=2.5), "N"),
    ],
)
def test_bad_arguments_are_named(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()
