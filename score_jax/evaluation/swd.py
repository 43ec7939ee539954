"""Sliced Wasserstein distance: a sample-quality proxy that needs no network weights.

SW_p(P, Q) = (E_theta W_p(theta.P, theta.Q)^p)^(1/p) over directions theta uniform on the
sphere, where theta.P is the law of <theta, X> for X ~ P. Each 1-D distance is computed exactly
for empirical distributions of any two sizes: W_p^p = int_0^1 |F^-1(u) - G^-1(u)|^p du, with
both quantile functions piecewise constant on the merged grid {i/n} U {j/m}. The directions
come from a seed, so every sampler of one report is measured along the same ones.
"""

from __future__ import annotations

import numpy as np


def wasserstein_1d(u: np.ndarray, v: np.ndarray, p: float = 2.0) -> np.ndarray:
    """Exact W_p between the empirical distributions of the columns of u [n, K] and v [m, K]
    (or of two vectors); returns [K] (or a scalar)."""
    u, v = np.sort(np.asarray(u, np.float64), axis=0), np.sort(np.asarray(v, np.float64), axis=0)
    n, m = len(u), len(v)
    if n == 0 or m == 0:
        raise ValueError("wasserstein_1d needs at least one point on each side")
    cuts = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    widths = np.diff(cuts, prepend=0.0)
    mids = cuts - widths / 2
    iu = np.minimum((mids * n).astype(np.int64), n - 1)
    iv = np.minimum((mids * m).astype(np.int64), m - 1)
    gaps = np.abs(u[iu] - v[iv]) ** p
    return np.tensordot(widths, gaps, axes=(0, 0)) ** (1.0 / p)


def random_directions(dim: int, num: int, seed: int = 0) -> np.ndarray:
    """`num` directions uniform on the unit sphere of R^dim: [dim, num]."""
    theta = np.random.default_rng(seed).standard_normal((dim, num))
    return theta / np.linalg.norm(theta, axis=0, keepdims=True)


def sliced_wasserstein(
    x: np.ndarray, y: np.ndarray, num_projections: int = 1000, p: float = 2.0, seed: int = 0
) -> float:
    """SW_p between point sets x [n, ...] and y [m, ...] (flattened per row), Monte Carlo over
    `num_projections` seeded directions."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: dimensions differ, {x.shape[1]} vs {y.shape[1]}")
    theta = random_directions(x.shape[1], num_projections, seed)
    # Directions in chunks bound the [n + m, chunk] work arrays (~100 MB at 20000 points each).
    chunk = max(1, 2**22 // (len(x) + len(y)))
    per_direction = np.concatenate(
        [
            wasserstein_1d(x @ theta[:, i : i + chunk], y @ theta[:, i : i + chunk], p) ** p
            for i in range(0, num_projections, chunk)
        ]
    )
    return float(np.mean(per_direction) ** (1.0 / p))
