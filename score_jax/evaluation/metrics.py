"""FID, KID and Inception Score, plus streaming accumulators for them (host-side, float64).

The accumulators let 50k samples pass through in batches: FID needs only running sums of the
features and of their outer products, IS only running sums of class probabilities and
entropies, and KID keeps a fixed-size uniform reservoir of features.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special
from scipy.linalg import lapack

# KID defaults of Binkowski et al. (2018): 100 subsets of 1000 samples from each set.
KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000
# Features kept for KID; 10k x 2048 float32 = 80 MB, enough for 100 distinct 1000-subsets.
KID_MAX_FEATURES = 10_000


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, which: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"Gaussian statistics {which}: expected mu [D] and sigma [D, D], "
            f"found mu {mu.shape} and sigma {sigma.shape}."
        )


def _psd_factor(matrix: np.ndarray) -> np.ndarray:
    """R [r, D] with R^T R = matrix, r its numerical rank (pivoted Cholesky, LAPACK dpstrf).

    Directions with variance below LAPACK's default tolerance (D * eps * max diagonal) are
    dropped, which also removes the tiny negative eigenvalues rounding leaves in a covariance.
    """
    packed, pivots, rank, info = lapack.dpstrf(matrix, lower=0)
    if info < 0:
        raise ValueError(f"Covariance factorisation failed (LAPACK dpstrf info={info}).")
    factor = np.empty((rank, matrix.shape[0]))
    factor[:, pivots - 1] = np.triu(packed)[:rank]  # undo the pivoting (pivots are 1-based)
    return factor


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    With S1 = R1^T R1 and S2 = R2^T R2, the eigenvalues of S1 S2 are the squared singular values
    of R1 R2^T, so tr (S1 S2)^(1/2) is the sum of those singular values. This needs no
    complex-valued sqrtm and no diagonal-offset fallback, handles singular covariances (fewer
    samples than dimensions) and costs two Cholesky factorisations and one SVD.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    _check_gaussian(mu1, sigma1, "1")
    _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"FID statistics differ in dimension: {mu1.shape} vs {mu2.shape}.")
    factor1 = _psd_factor((sigma1 + sigma1.T) / 2)
    factor2 = _psd_factor((sigma2 + sigma2.T) / 2)
    trace_sqrt = np.linalg.svd(factor1 @ factor2.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with kernel k(a, b) = (a.b / d + 1)^3; x [m, d], y [n, d]."""
    dim = x.shape[1]
    k_xx = (x @ x.T / dim + 1.0) ** 3
    k_yy = (y @ y.T / dim + 1.0) ** 3
    k_xy = (x @ y.T / dim + 1.0) ** 3
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid(
    features1,
    features2,
    num_subsets: int = KID_NUM_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over random subsets of the unbiased MMD^2.

    Each subset draws `subset_size` rows without replacement from each set (capped at the
    smaller set's size), as in Binkowski et al. (2018); `seed` fixes the draws.
    """
    # Cast each subset, not the whole sets, to float64: 10k x 2048 features would be 160 MB.
    x, y = np.asarray(features1), np.asarray(features2)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs features [N, D] of equal D; found {x.shape} and {y.shape}.")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features in each set; found {len(x)}, {len(y)}.")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x_subset = x[rng.choice(len(x), size, replace=False)].astype(np.float64)
        y_subset = y[rng.choice(len(y), size, replace=False)].astype(np.float64)
        values.append(_polynomial_mmd2(x_subset, y_subset))
    return float(np.mean(values)), float(np.std(values))


def _split_bounds(n: int, splits: int) -> list[tuple[int, int]]:
    return [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) on each of `splits` contiguous chunks: (mean, std).

    splits=10 is the convention of Salimans et al.'s code; score_sde (TF-GAN) uses all samples
    at once, which is splits=1 (std 0).
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"IS needs logits [N >= splits={splits}, classes]; found {logits.shape}.")
    log_p = special.log_softmax(logits, axis=1)
    scores = []
    for lo, hi in _split_bounds(len(logits), splits):
        p = np.exp(log_p[lo:hi])
        log_marginal = np.log(p.mean(axis=0))
        kl = (p * (log_p[lo:hi] - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


@dataclasses.dataclass(frozen=True)
class GaussianAccumulator:
    """Running float64 sums for the mean and covariance of features [*, D].

    Sums are taken around `shift` (the first batch's mean) so that E[xx^T] - mu mu^T does not
    cancel catastrophically when the mean is large compared with the spread.
    """

    count: int = 0
    shift: np.ndarray | None = None
    total: np.ndarray | None = None
    outer: np.ndarray | None = None

    def update(self, features) -> GaussianAccumulator:
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [B, D]; found shape {x.shape}.")
        if self.shift is None:
            shift = x.mean(axis=0)
            total, outer = np.zeros_like(shift), np.zeros((x.shape[1],) * 2)
        else:
            shift, total, outer = self.shift, self.total, self.outer
        centred = x - shift
        return GaussianAccumulator(
            self.count + len(x), shift, total + centred.sum(0), outer + centred.T @ centred
        )

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) with the unbiased (N - 1) covariance, as np.cov."""
        if self.count < 2:
            raise ValueError(f"Need at least 2 features for a covariance; have {self.count}.")
        mean_centred = self.total / self.count
        cov = (self.outer - self.count * np.outer(mean_centred, mean_centred)) / (self.count - 1)
        return self.shift + mean_centred, cov


@dataclasses.dataclass(frozen=True)
class InceptionScoreAccumulator:
    """Streams logits for `inception_score(all_logits, splits)` given the final count `total`.

    Per split it keeps the sum of p(y|x) and the sum of sum_y p log p.
    """

    total: int
    splits: int = 1
    seen: int = 0
    prob_sums: np.ndarray | None = None
    neg_entropy_sums: np.ndarray | None = None

    def __post_init__(self):
        if self.total < self.splits:
            raise ValueError(f"IS needs at least splits={self.splits} samples; total={self.total}.")

    def update(self, logits) -> InceptionScoreAccumulator:
        log_p = special.log_softmax(np.asarray(logits, np.float64), axis=1)
        if self.seen + len(log_p) > self.total:
            raise ValueError(f"More logits than the declared total {self.total}.")
        if self.prob_sums is None:
            prob_sums, neg_entropy = np.zeros((self.splits, log_p.shape[1])), np.zeros(self.splits)
        else:
            prob_sums, neg_entropy = self.prob_sums.copy(), self.neg_entropy_sums.copy()
        starts = [lo for lo, _ in _split_bounds(self.total, self.splits)]
        split_of = (
            np.searchsorted(starts, np.arange(self.seen, self.seen + len(log_p)), "right") - 1
        )
        p = np.exp(log_p)
        np.add.at(prob_sums, split_of, p)
        np.add.at(neg_entropy, split_of, (p * log_p).sum(axis=1))
        return dataclasses.replace(
            self, seen=self.seen + len(log_p), prob_sums=prob_sums, neg_entropy_sums=neg_entropy
        )

    def result(self) -> tuple[float, float]:
        if self.seen != self.total:
            raise ValueError(f"Saw {self.seen} logits; expected {self.total}.")
        sizes = np.array([hi - lo for lo, hi in _split_bounds(self.total, self.splits)])
        marginal = self.prob_sums / sizes[:, None]
        kl = self.neg_entropy_sums / sizes - (marginal * np.log(marginal)).sum(axis=1)
        scores = np.exp(kl)
        return float(np.mean(scores)), float(np.std(scores))


@dataclasses.dataclass(frozen=True)
class FeatureReservoir:
    """A uniform random sample of at most `capacity` feature rows (Algorithm R, seeded).

    With fewer rows than `capacity` it holds all of them, in order.
    """

    capacity: int = KID_MAX_FEATURES
    seed: int = 0
    seen: int = 0
    rows: np.ndarray | None = None

    def update(self, features) -> FeatureReservoir:
        x = np.asarray(features, np.float32)
        rows = np.empty((0, x.shape[1]), np.float32) if self.rows is None else self.rows
        free = max(self.capacity - len(rows), 0)
        rows = np.concatenate([rows, x[:free]]) if free else rows.copy()
        # The draw for row i depends only on (seed, i), so batching does not change the sample.
        for i in range(free, len(x)):
            index = self.seen + i
            slot = np.random.default_rng((self.seed, index)).integers(0, index + 1)
            if slot < self.capacity:
                rows[slot] = x[i]
        return dataclasses.replace(self, seen=self.seen + len(x), rows=rows)
