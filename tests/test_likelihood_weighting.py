"""Importance-sampled likelihood weighting (Song et al. 2021, "Maximum likelihood training of
score-based diffusion models") against closed forms: the times follow g^2 / std^2, and the
reweighted loss estimates the likelihood-weighted objective without bias.

The references integrate g(t)^2 (from sde.sde) over std(t)^2 (from sde.marginal_prob) by
quadrature in float64, independently of the antiderivative the sampler inverts.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses
from score_jax.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    likelihood_proposal_scale,
    sample_likelihood_times,
)

SDES = {"ve": VESDE(0.01, 50.0), "vp": VPSDE(0.1, 20.0), "subvp": SubVPSDE(0.1, 20.0)}
EPS = 1e-5
# A log-spaced grid: the VP and sub-VP densities grow like 1 / t and 2 / t towards t = eps.
GRID = np.geomspace(EPS, 1.0, 200_001)


def _schedule(sde, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """float64 g(t)^2, mean coefficient m(t) and std(t) on t [n], from the SDE's own formulas."""
    with jax.enable_x64(True):
        tt = jnp.asarray(t, jnp.float64)
        ones = jnp.ones((len(t), 1), jnp.float64)
        g2 = np.asarray(sde.sde(ones, tt)[1], np.float64) ** 2
        mean, std = sde.marginal_prob(ones, tt)
    return g2, np.asarray(mean, np.float64)[:, 0], np.asarray(std, np.float64)


def _trapezoid_cumulative(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(t))])


@pytest.mark.parametrize("name", sorted(SDES))
def test_sampled_times_follow_g2_over_std2(name):
    sde = SDES[name]
    g2, _, std = _schedule(sde, GRID)
    cumulative = _trapezoid_cumulative(g2 / std**2, GRID)
    n = 20_000
    t = np.sort(np.asarray(sample_likelihood_times(sde, jax.random.key(0), n, EPS), np.float64))
    assert t.min() >= EPS and t.max() <= 1.0
    reference = np.interp(t, GRID, cumulative / cumulative[-1])
    # Kolmogorov-Smirnov distance: 1.63 / sqrt(n) = 0.0115 is the 1% critical value, so a
    # correct sampler passes at this fixed key with 99% odds; the trapezoid error on this grid
    # is < 1e-6. A proposal proportional to g^2 alone (std forgotten) is off by > 0.3 on VP.
    empirical_hi = np.arange(1, n + 1) / n
    distance = max(np.max(empirical_hi - reference), np.max(reference - empirical_hi + 1 / n))
    assert distance < 1.63 / math.sqrt(n), distance
    # Z / (T - eps) with Z the integral of g^2 / std^2: the trapezoid's error is < 1e-5 relative.
    scale = float(likelihood_proposal_scale(sde, EPS))
    assert scale == pytest.approx(cumulative[-1] / (1.0 - EPS), rel=1e-4)


def _linear_apply(sde, v0: float = 0.5):
    """A 'network' whose score is w(t) x_t, w = -1 / (m^2 v0 + std^2): the exact score of
    N(0, v0 I) data, used on data that are not N(0, v0 I) so that the loss is not trivial."""

    def time_of(labels):
        if isinstance(sde, VESDE):
            return jnp.log(labels / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
        return labels / 999

    def apply(variables, x, labels, train=False, rngs=None):
        t = time_of(labels)
        mean, std = sde.marginal_prob(jnp.ones((len(t), 1)), t)
        w = -1.0 / (mean[:, 0] ** 2 * v0 + std**2)
        score = w[:, None] * x
        return score if isinstance(sde, VESDE) else -std[:, None] * score

    return apply


def _objective(sde, c: float, v0: float = 0.5) -> float:
    """E_{t ~ U(eps, 1)} g^2 E_z mean_d (s + z / std)^2 for the score of `_linear_apply`, with
    c = mean_d x0^2 over the batch: g^2 / std^2 ((w std m)^2 c + (w std^2 + 1)^2)."""
    g2, m, std = _schedule(sde, GRID)
    w = -1.0 / (m**2 * v0 + std**2)
    integrand = g2 / std**2 * ((w * std * m) ** 2 * c + (w * std**2 + 1) ** 2)
    return _trapezoid_cumulative(integrand, GRID)[-1] / (1.0 - EPS)


@pytest.mark.parametrize("name", sorted(SDES))
def test_importance_weighted_loss_is_unbiased_for_the_likelihood_weighted_objective(name):
    sde = SDES[name]
    x0 = jax.random.normal(jax.random.key(1), (16_384, 4)) * 0.8 + 0.3
    batch = {"image": x0}
    apply = _linear_apply(sde)
    kwargs = dict(reduce_mean=True, likelihood_weighting=True, eps=EPS)
    weighted = losses.sde_loss_fn(sde, apply, importance_weighting=True, **kwargs)
    uniform = losses.sde_loss_fn(sde, apply, **kwargs)
    per_is = np.asarray(weighted({}, jax.random.key(2), batch)[1]["per_example"], np.float64)
    per_u = np.asarray(uniform({}, jax.random.key(2), batch)[1]["per_example"], np.float64)
    expected = _objective(sde, float(jnp.mean(x0**2)))
    # The mean of 16384 independent draws: within 4 standard errors of the quadrature
    # (which is exact to < 1e-5 relative on this grid).
    se = per_is.std(ddof=1) / math.sqrt(len(per_is))
    assert abs(per_is.mean() - expected) < 4 * se, (per_is.mean(), expected, se)
    assert se < 0.02 * expected  # tight enough that a 10% bias would be caught
    # The uniform-time estimator has the same mean but heavier tails (weight g^2 / std^2 up to
    # 1 / eps on VP); importance sampling is the variance reduction it is for (VE: equal).
    se_u = per_u.std(ddof=1) / math.sqrt(len(per_u))
    assert abs(per_u.mean() - expected) < 4 * se_u
    if name != "ve":
        assert per_is.std() < 0.2 * per_u.std()


def test_importance_weighting_needs_the_likelihood_weighting():
    with pytest.raises(ValueError, match="likelihood_weighting"):
        losses.sde_loss_fn(SDES["vp"], _linear_apply(SDES["vp"]), importance_weighting=True)
    with pytest.raises(ValueError, match="continuous"):
        losses.get_loss_fn(
            SDES["vp"], _linear_apply(SDES["vp"]), True, continuous=False, importance_weighting=True
        )
