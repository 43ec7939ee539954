"""FID / KID / IS against the fixture and direct float64 formulas; streaming equals batch."""

import itertools

import numpy as np
import pytest
from conftest import load_reference
from scipy import linalg

from score_jax.evaluation import metrics


def _batches(x, sizes=(7, 1, 30, 13)):
    """Uneven consecutive batches covering all of x."""
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(x):
            return
        yield x[start : start + size]
        start += size


def test_frechet_distance_equals_pytorch_fid_on_fixture():
    ref = load_reference("fid_inception")
    value = metrics.frechet_distance(
        ref["fid_mu1"], ref["fid_sigma1"], ref["fid_mu2"], ref["fid_sigma2"]
    )
    # pytorch-fid (scipy sqrtm) gives 10.241048014557862; an eigh route agrees to 8.5e-14.
    assert abs(value - float(ref["fid_value"])) < 1e-6
    assert abs(value - 10.241048014557862) < 1e-6


def test_frechet_distance_closed_form_and_singular_covariances():
    rng = np.random.default_rng(0)
    # Diagonal covariances commute: tr sqrt(S1 S2) = sum sqrt(s1 s2).
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    value = metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert value == pytest.approx(expected, rel=1e-12)
    # A general pair against the scipy sqrtm formula (non-singular, well conditioned).
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(50, 8)) * 1.5 + 0.3
    m1, c1, m2, c2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    direct = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert metrics.frechet_distance(m1, c1, m2, c2) == pytest.approx(direct, rel=1e-10)
    # Fewer samples than dimensions: rank-deficient covariances. With S1 = A^T A (A the centred
    # rows / sqrt(n - 1)) and S2 = R^T R, tr (S1 S2)^(1/2) is the nuclear norm of A R^T exactly;
    # an eigh/sqrtm route is off by ~1e-4 here (sqrt of the rounding in 60 null eigenvalues).
    few, many = rng.normal(size=(5, 64)), rng.normal(size=(300, 64)) * 0.8 + 0.1
    a = (few - few.mean(0)) / 2.0
    m2, s2 = many.mean(0), np.cov(many, rowvar=False)
    nuclear = np.linalg.svd(a @ np.linalg.cholesky(s2), compute_uv=False).sum()
    exact = ((few.mean(0) - m2) ** 2).sum() + np.trace(a.T @ a) + np.trace(s2) - 2 * nuclear
    value = metrics.frechet_distance(few.mean(0), np.cov(few, rowvar=False), m2, s2)
    assert value == pytest.approx(exact, rel=1e-12)
    mu, sigma = few.mean(0), np.cov(few, rowvar=False)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-12 * np.trace(sigma)


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="differ in dimension"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma \(3, 4\)"):
        metrics.frechet_distance(np.zeros(3), np.zeros((3, 4)), np.zeros(3), np.eye(3))


def _mmd2_by_loops(x, y):
    """The unbiased polynomial-kernel MMD^2 written out pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_direct_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.4
    # One subset of every row is a permutation of the full sets: exactly the full U-statistic.
    mean, std = metrics.kid(x, y, num_subsets=1, subset_size=12)
    assert mean == pytest.approx(_mmd2_by_loops(x, y), rel=1e-12)
    assert std == 0.0
    # Random subsets are unbiased for the full statistic: average of many ~ full value.
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) * 1.3
    full = _mmd2_by_loops(x, y)
    mean, std = metrics.kid(x, y, num_subsets=2000, subset_size=10, seed=3)
    assert abs(mean - full) < 5 * std / np.sqrt(2000)  # 5 standard errors
    with pytest.raises(ValueError, match="equal D"):
        metrics.kid(x, np.zeros((30, 3)))


def test_kid_closed_forms():
    # Two point masses a and b in d dims: every kernel value is known, so is the U-statistic.
    d = 3
    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 2.0])
    x, y = np.tile(a, (8, 1)), np.tile(b, (6, 1))
    exact = (a @ a / d + 1) ** 3 + (b @ b / d + 1) ** 3 - 2 * (a @ b / d + 1) ** 3
    assert metrics.kid(x, y, num_subsets=3, subset_size=5)[0] == pytest.approx(exact, rel=1e-12)
    # Two samples of one distribution: the unbiased estimate has expectation 0. Subsets share
    # rows, so their mean is not 200 independent draws; one subset's spread bounds it safely.
    rng = np.random.default_rng(5)
    mean, std = metrics.kid(rng.normal(size=(400, 6)), rng.normal(size=(400, 6)), 200, 100)
    assert abs(mean) < std
    assert metrics.kid(rng.normal(size=(400, 6)), rng.normal(size=(400, 6)) + 1.0, 200, 100)[0] > (
        20 * std
    )


def _inception_score_direct(logits, splits):
    scores, n = [], len(logits)
    for i in range(splits):  # Salimans et al.: chunk i is [i * n // splits, (i + 1) * n // splits)
        chunk = logits[i * n // splits : (i + 1) * n // splits]
        p = np.exp(chunk - chunk.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        py = p.mean(0)
        kl = [sum(pi[c] * (np.log(pi[c]) - np.log(py[c])) for c in range(len(py))) for pi in p]
        scores.append(np.exp(np.mean(kl)))
    return np.mean(scores), np.std(scores)


def test_inception_score_against_direct_formula_and_limits():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(53, 7)) * 3
    for splits in (1, 10):
        ours = metrics.inception_score(logits, splits)
        np.testing.assert_allclose(ours, _inception_score_direct(logits, splits), rtol=1e-12)
    # Identical predictions: IS = 1. Confident, evenly spread over 4 classes: IS -> 4.
    assert metrics.inception_score(np.tile(logits[:1], (20, 1)), 1)[0] == pytest.approx(1.0)
    confident = np.eye(4)[np.arange(40) % 4] * 50.0
    assert metrics.inception_score(confident, 1)[0] == pytest.approx(4.0, rel=1e-12)


def test_streaming_gaussian_equals_batch_statistics():
    rng = np.random.default_rng(3)
    # A large common offset: naive E[xx^T] - mu mu^T in float32 would lose every digit here.
    features = (rng.normal(size=(200, 16)) * 0.1 + 1000.0).astype(np.float32)
    acc = metrics.GaussianAccumulator()
    for batch in _batches(features):
        acc = acc.update(batch)
    mu, sigma = acc.mean_and_covariance()
    x = features.astype(np.float64)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_streaming_inception_score_equals_batch():
    logits = np.random.default_rng(4).normal(size=(103, 11)) * 2
    for splits in (1, 10):
        acc = metrics.InceptionScoreAccumulator(total=len(logits), splits=splits)
        for batch in _batches(logits):
            acc = acc.update(batch)
        np.testing.assert_allclose(acc.result(), metrics.inception_score(logits, splits), 1e-12)


def test_feature_reservoir_is_uniform_and_batch_independent():
    rows = np.arange(100, dtype=np.float32)[:, None]
    whole = metrics.FeatureReservoir(capacity=10, seed=5).update(rows)
    batched = metrics.FeatureReservoir(capacity=10, seed=5)
    for batch in _batches(rows):
        batched = batched.update(batch)
    np.testing.assert_array_equal(whole.rows, batched.rows)
    assert whole.seen == 100 and whole.rows.shape == (10, 1)
    # Under capacity it holds everything in order.
    small = metrics.FeatureReservoir(capacity=500).update(rows)
    np.testing.assert_array_equal(small.rows, rows)
    # Each row is kept with probability 10/100; over 300 seeds that is 30 +- 5.2 (binomial sd).
    counts = np.zeros(100)
    for seed in range(300):
        kept = metrics.FeatureReservoir(capacity=10, seed=seed).update(rows).rows[:, 0]
        counts[kept.astype(int)] += 1
    assert abs(counts.mean() - 30) < 1e-9  # exactly 10 kept per run
    assert counts.min() > 30 - 5 * 5.2 and counts.max() < 30 + 5 * 5.2
