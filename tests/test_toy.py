"""The analytic Gaussian mixture: scores, samples, and that its perturbed family solves the
Fokker-Planck equation of each SDE (so it really is the SDE's marginal)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.sde import VESDE, VPSDE, SubVPSDE
from score_jax.toy import GaussianMixture

SDES = {"ve": VESDE(0.01, 50.0), "vp": VPSDE(0.1, 20.0), "subvp": SubVPSDE(0.1, 20.0)}


def _mixture():
    return GaussianMixture(
        means=jnp.array([[1.0, 0.5, -1.0], [-1.5, 0.0, 0.5], [0.0, -1.0, 1.0]]),
        stds=jnp.array([0.3, 0.5, 0.8]),
        weights=jnp.array([0.2, 0.5, 0.3]),
    )


def test_score_is_gradient_of_log_prob():
    gm = _mixture()
    x = gm.sample(jax.random.PRNGKey(0), 64) * 1.5
    autodiff = jax.vmap(jax.grad(lambda y: gm.log_prob(y[None])[0]))(x)
    np.testing.assert_allclose(gm.score(x), autodiff, rtol=1e-4, atol=1e-4)


def test_log_prob_normalises_and_samples_follow_weights():
    gm = GaussianMixture(jnp.array([[0.0], [3.0]]), jnp.array([0.5, 1.0]), jnp.array([1.0, 3.0]))
    grid = np.linspace(-6, 10, 20001)
    density = np.exp(np.asarray(gm.log_prob(jnp.asarray(grid[:, None], jnp.float32)), np.float64))
    # Riemann sum of a smooth density on a fine grid; float32 densities carry ~1e-7 relative error.
    assert abs(np.sum(density) * (grid[1] - grid[0]) - 1.0) < 1e-5
    x = gm.sample(jax.random.PRNGKey(1), 40_000)
    # E[x] = 0.25*0 + 0.75*3; its standard error is std(x)/sqrt(n) ~ 0.008.
    assert abs(float(jnp.mean(x)) - 2.25) < 4 * float(jnp.std(x)) / np.sqrt(40_000)


@pytest.mark.parametrize("name", sorted(SDES))
def test_score_fn_is_the_perturbed_mixture_score(name):
    gm, sde = _mixture(), SDES[name]
    x = gm.sample(jax.random.PRNGKey(2), 5)
    t = jnp.array([0.01, 0.2, 0.5, 0.8, 1.0])
    batched = gm.score_fn(sde)(x, t)
    for i in range(5):
        single = gm.perturbed(sde, float(t[i])).score(x[i : i + 1])
        np.testing.assert_allclose(batched[i : i + 1], single, rtol=1e-5, atol=1e-6)
    # Any batch shape works, e.g. [B, 3, 1, 1] for image-like code paths.
    image_like = gm.score_fn(sde)(x.reshape(5, 3, 1, 1), t)
    np.testing.assert_allclose(image_like.reshape(5, 3), batched, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SDES))
def test_perturbed_mixture_solves_fokker_planck(name):
    """For dx = f(t) x dt + g(t) dw the log-density obeys
    d/dt log p = -D f - f x.grad log p + g^2/2 (lap log p + |grad log p|^2)."""
    sde = SDES[name]
    with jax.enable_x64(True):
        gm = _mixture()
        gm = GaussianMixture(gm.means.astype(jnp.float64), gm.stds.astype(jnp.float64), gm.weights)

        def log_p(x, t):
            return gm.perturbed(sde, t).log_prob(x[None])[0]

        def residual(x, t, h):
            # Central finite difference in time; the spatial terms are exact (autodiff).
            dlogp_dt = (log_p(x, t + h) - log_p(x, t - h)) / (2 * h)
            tt = jnp.array([t])
            drift, diffusion = sde.sde(x[None], tt)
            f = drift[0, 0] / x[0]
            grad = jax.grad(log_p)(x, t)
            lap = jnp.trace(jax.hessian(log_p)(x, t))
            rhs = (
                -x.shape[0] * f
                - f * jnp.dot(x, grad)
                + 0.5 * diffusion[0] ** 2 * (lap + jnp.dot(grad, grad))
            )
            return dlogp_dt, rhs

        points = [jnp.array([0.7, -0.2, 0.4]), jnp.array([-1.0, 0.3, 1.2])]
        for x in points:
            for t in (0.05, 0.3, 0.7):
                lhs, rhs = residual(x, t, 1e-5)
                # Finite-difference truncation error is O(h^2 |d3 log p / dt3|) << 1e-5 here.
                assert abs(float(lhs - rhs)) <= 1e-5 * max(1.0, abs(float(rhs))), (x, t, lhs, rhs)
        # Without the diffusion term the equation fails: the check has teeth.
        x, t = points[0], 0.3
        lhs, rhs = residual(x, t, 1e-5)
        drift, diffusion = sde.sde(x[None], jnp.array([t]))
        no_diffusion = rhs - 0.5 * diffusion[0] ** 2 * (
            jnp.trace(jax.hessian(log_p)(x, t)) + jnp.sum(jax.grad(log_p)(x, t) ** 2)
        )
        assert abs(float(lhs - no_diffusion)) > 1e-2


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(jnp.zeros((2, 3)), jnp.ones(3), jnp.ones(2))
