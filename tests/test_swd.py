"""The sliced Wasserstein distance against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from score_jax.evaluation.swd import sliced_wasserstein, wasserstein_1d


def test_wasserstein_1d_by_hand_with_unequal_sizes():
    """{0, 1} vs {0, 1/2, 1}: the quantile functions differ by 1/2 on (1/3, 2/3), so
    W1 = 1/6 and W2^2 = 1/12."""
    u, v = np.array([1.0, 0.0]), np.array([0.5, 1.0, 0.0])
    assert wasserstein_1d(u, v, p=1) == pytest.approx(1 / 6, rel=1e-12)
    assert wasserstein_1d(u, v, p=2) == pytest.approx(np.sqrt(1 / 12), rel=1e-12)
    # Equal sizes: the sorted points pair up.
    a, b = np.array([3.0, 1.0, 2.0]), np.array([0.0, 5.0, 1.0])
    assert wasserstein_1d(a, b, p=2) == pytest.approx(np.sqrt((1 + 1 + 4) / 3), rel=1e-12)


def test_wasserstein_1d_between_gaussians():
    """W2(N(m1, s1^2), N(m2, s2^2))^2 = (m1 - m2)^2 + (s1 - s2)^2, on quantile grids of sizes
    40000 and 30001 (midpoint quantiles: discretisation error ~1e-4 here)."""
    u = 0.3 + 1.2 * norm.ppf((np.arange(40_000) + 0.5) / 40_000)
    v = -0.5 + 0.7 * norm.ppf((np.arange(30_001) + 0.5) / 30_001)
    assert wasserstein_1d(u, v) == pytest.approx(np.hypot(0.8, 0.5), rel=1e-3)
    # W1 between two shifts of one law is the shift.
    assert wasserstein_1d(u, u + 0.25, p=1) == pytest.approx(0.25, rel=1e-12)


def test_sliced_wasserstein_between_isotropic_gaussians():
    """Projections of N(m, s^2 I) are N(theta.m, s^2), so SW2^2 = E (theta.dm)^2 + (s1 - s2)^2
    = |dm|^2 / D + (s1 - s2)^2 = 0.5 + 0.25 here. With 20000 draws a side the empirical W2 is
    off by ~1% and 2000 directions give the average to ~1%: 3% tolerance. The same draws
    against themselves shifted by nothing give 0."""
    rng = np.random.default_rng(0)
    dim = 8
    dm = np.zeros(dim)
    dm[0] = 2.0
    x = rng.standard_normal((20_000, dim))
    y = dm + 1.5 * rng.standard_normal((20_000, dim))
    swd = sliced_wasserstein(x, y, num_projections=2000, seed=1)
    assert swd == pytest.approx(np.sqrt(0.75), rel=0.03)
    assert sliced_wasserstein(x, x.copy(), num_projections=50) == 0.0
    # Images are flattened per example.
    assert sliced_wasserstein(x.reshape(-1, 2, 2, 2), y.reshape(-1, 2, 2, 2), 2000, seed=1) == swd


def test_bad_input():
    with pytest.raises(ValueError, match="dimensions differ, 8 vs 4"):
        sliced_wasserstein(np.zeros((3, 8)), np.zeros((3, 4)))
