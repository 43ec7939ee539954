"""Statistical checks that samples come from a Gaussian mixture, shared by the sampler tests,
and the tests that show these checks accept exact samples and reject slightly wrong ones.

Tolerances come from the sample size. With n samples and component k of weight w_k, mean m_k
and isotropic std s_k (n_k ~ n w_k points, D dims):
  * weight:   |n_k/n - w_k| <= 3 sqrt(w_k (1 - w_k) / n)            (3 standard errors)
  * mean:     |mean_kd - m_kd| <= 4 s_k / sqrt(n_k) for every coordinate d
  * variance: |var_k / s_k^2 - 1| <= 4 sqrt(2 / (D (n_k - 1)))     (pooled over the D dims)
  * energy distance between 1000 samples and 1000 exact draws below the 99% point of its
    permutation distribution (199 permutations).
Means and variances use 4 standard errors because each test file checks ~100 of them: at 4 SE
the chance that an exact sampler fails one is below 1%. Points are assigned to the component of
highest posterior; with the mixture below (components >= 3.4 apart, stds <= 0.4) fewer than 1 in
10^4 points is misassigned.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing

from score_jax.toy import GaussianMixture

MIXTURE = GaussianMixture(
    means=jnp.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]]),
    stds=jnp.array([0.3, 0.4, 0.3]),
    weights=jnp.array([0.5, 0.3, 0.2]),
)
NUM_SAMPLES = 2000
TWO_SAMPLE_SIZE = 1000
PERMUTATIONS = 199


@functools.cache
def exact_score(sde):
    """One exact score_fn object per SDE, so that compiled samplers are shared between tests."""
    return MIXTURE.score_fn(sde)


# Python-side tallies of counted_score: 'traces' grows when a sampler is traced (compiled), 'runs'
# once per score evaluation at run time (through a host callback).
COUNTER = {"traces": 0, "runs": 0}


def _count_run():
    COUNTER["runs"] += 1


@functools.cache
def counted_score(sde):
    """The exact score of MIXTURE under sde, counting its traces and evaluations in COUNTER.
    (Not for sharded programs, where the callback would run once per device.)"""
    score = exact_score(sde)

    def score_fn(x, t):
        COUNTER["traces"] += 1
        jax.debug.callback(_count_run)
        return score(x, t)

    return score_fn


def energy_distance_pvalue(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> float:
    """Permutation p-value of the energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic)."""
    z = np.concatenate([x, y]).astype(np.float64)
    dist = np.sqrt(np.sum((z[:, None] - z[None]) ** 2, axis=-1))
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    labels = np.zeros((len(z), permutations + 1))
    labels[:n, 0] = 1.0
    for j in range(1, permutations + 1):
        labels[rng.permutation(len(z))[:n], j] = 1.0
    in_x, in_y = labels, 1.0 - labels
    dx, dy = dist @ in_x, dist @ in_y
    xx = np.sum(in_x * dx, axis=0) / n**2
    yy = np.sum(in_y * dy, axis=0) / m**2
    xy = np.sum(in_x * dy, axis=0) / (n * m)
    stat = 2 * xy - xx - yy
    return float((1 + np.sum(stat[1:] >= stat[0])) / (1 + permutations))


def _component_log_probs(x: np.ndarray, means, stds, weights) -> np.ndarray:
    sq = np.sum((x[:, None] - means[None]) ** 2, axis=-1)
    return np.log(weights) - x.shape[1] * np.log(stds) - 0.5 * sq / stds**2


def exact_samples(gm: GaussianMixture, n: int, seed: int) -> np.ndarray:
    """n draws [n, D] from gm with numpy (no compilation)."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(gm.weights), size=n, p=np.asarray(gm.weights, np.float64))
    noise = rng.standard_normal((n, gm.dim))
    return np.asarray(gm.means)[comp] + np.asarray(gm.stds)[comp, None] * noise


def mixture_failures(
    x: np.typing.ArrayLike, gm: GaussianMixture = MIXTURE, seed: int = 0
) -> list[str]:
    """The checks (module docstring) that samples x [n, D] fail; empty when they match gm."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        return ["samples are not finite"]
    n, dim = x.shape
    means, stds, weights = (np.asarray(a, np.float64) for a in (gm.means, gm.stds, gm.weights))
    comp = np.argmax(_component_log_probs(x, means, stds, weights), axis=-1)
    failures = []
    for k in range(len(weights)):
        pts = x[comp == k]
        n_k = len(pts)
        w_se = np.sqrt(weights[k] * (1 - weights[k]) / n)
        if abs(n_k / n - weights[k]) > 3 * w_se:
            failures.append(f"weight {k}: {n_k / n:.4f} vs {weights[k]:.4f} (3 SE {3 * w_se:.4f})")
        if n_k < 10:
            failures.append(f"component {k}: only {n_k} points")
            continue
        mean_err = np.max(np.abs(pts.mean(0) - means[k]))
        if mean_err > 4 * stds[k] / np.sqrt(n_k):
            failures.append(f"mean {k}: error {mean_err:.4f} > {4 * stds[k] / np.sqrt(n_k):.4f}")
        var_ratio = pts.var(0, ddof=1).mean() / stds[k] ** 2
        var_tol = 4 * np.sqrt(2 / (dim * (n_k - 1)))
        if abs(var_ratio - 1) > var_tol:
            failures.append(f"variance {k}: ratio {var_ratio:.4f} (tolerance {var_tol:.4f})")
    exact = exact_samples(gm, TWO_SAMPLE_SIZE, 12345 + seed)
    rng = np.random.default_rng(seed)
    subset = x[rng.choice(n, size=min(n, TWO_SAMPLE_SIZE), replace=False)]
    p = energy_distance_pvalue(subset, exact, PERMUTATIONS, seed)
    if p < 0.01:
        failures.append(f"energy distance two-sample test rejects: p = {p:.4f}")
    return failures


def test_exact_samples_pass():
    for seed in range(2):
        assert mixture_failures(exact_samples(MIXTURE, NUM_SAMPLES, 100 + seed), seed=seed) == []


def test_checks_catch_small_errors():
    """Each check on its own notices a 10% error of one parameter."""
    x = exact_samples(MIXTURE, NUM_SAMPLES, 7)
    m0 = np.asarray(MIXTURE.means[0])
    comp0 = (np.linalg.norm(x - m0, axis=-1) < 1.5)[:, None]
    scaled = np.where(comp0, m0 + 1.25 * (x - m0), x)  # component 0 std x1.25
    assert any("variance 0" in f for f in mixture_failures(scaled))
    shifted = np.where(comp0, x + np.array([0.1, 0.0]), x)  # mean off by 1/3 std
    assert any("mean 0" in f for f in mixture_failures(shifted))
    reweighted = GaussianMixture(MIXTURE.means, MIXTURE.stds, jnp.array([0.44, 0.33, 0.23]))
    assert any("weight" in f for f in mixture_failures(exact_samples(reweighted, NUM_SAMPLES, 3)))
    # The two-sample test alone: a 20% wider copy of the whole mixture.
    wide = GaussianMixture(MIXTURE.means * 1.2, MIXTURE.stds * 1.2, MIXTURE.weights)
    p = energy_distance_pvalue(
        exact_samples(wide, 1000, 4), exact_samples(MIXTURE, 1000, 5), PERMUTATIONS, 0
    )
    assert p < 0.01
