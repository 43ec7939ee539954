"""Isotropic Gaussian mixtures: exact samples, densities, scores and perturbed marginals.

A mixture stays a mixture under every linear SDE here: at time t each component N(m, s^2 I) of
the data becomes N(a(t) m, (a(t)^2 s^2 + std(t)^2) I), where a(t) and std(t) are the mean
coefficient and standard deviation of `sde.marginal_prob`. That gives the exact score of p_t,
which is the ground truth for samplers and likelihood.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from score_jax.sde import SDE, ScoreFn


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """sum_k w_k N(means_k, stds_k^2 I); means [K, D], stds [K], weights [K] (normalised here)."""

    means: jax.Array
    stds: jax.Array
    weights: jax.Array

    def __post_init__(self):
        means = jnp.asarray(self.means, float)
        stds = jnp.asarray(self.stds, float)
        weights = jnp.asarray(self.weights, float)
        if means.ndim != 2 or stds.shape != means.shape[:1] or weights.shape != means.shape[:1]:
            raise ValueError(
                "GaussianMixture needs means [K, D], stds [K] and weights [K]; got "
                f"{means.shape}, {stds.shape}, {weights.shape}"
            )
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / jnp.sum(weights))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n exact samples [n, D]."""
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.categorical(k_comp, jnp.log(self.weights), shape=(n,))
        noise = jax.random.normal(k_noise, (n, self.dim))
        return self.means[comp] + self.stds[comp][:, None] * noise

    def component_log_probs(self, x: jax.Array) -> jax.Array:
        """log w_k + log N(x; m_k, s_k^2 I) for every point and component: [n, K]."""
        sq = jnp.sum((x[:, None, :] - self.means[None]) ** 2, axis=-1)
        var = self.stds**2
        log_norm = -0.5 * self.dim * jnp.log(2 * math.pi * var)
        return jnp.log(self.weights) + log_norm - 0.5 * sq / var

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log density [n] of points x [n, D]."""
        return logsumexp(self.component_log_probs(x), axis=-1)

    def score(self, x: jax.Array) -> jax.Array:
        """grad_x log p(x) [n, D] in closed form: sum_k r_k(x) (m_k - x) / s_k^2."""
        resp = jax.nn.softmax(self.component_log_probs(x), axis=-1)
        diff = (self.means[None] - x[:, None, :]) / (self.stds**2)[None, :, None]
        return jnp.sum(resp[..., None] * diff, axis=1)

    def perturbed(self, sde: SDE, t: float) -> GaussianMixture:
        """The exact marginal p_t of the data under `sde` at scalar time t."""
        coeff, std = _mean_coeff_and_std(sde, jnp.asarray([t], float))
        return GaussianMixture(
            coeff[0] * self.means,
            jnp.sqrt((coeff[0] * self.stds) ** 2 + std[0] ** 2),
            self.weights,
        )

    def score_fn(self, sde: SDE) -> ScoreFn:
        """score_fn(x [B, D], t [B]) -> exact score of p_t at each (x_b, t_b)."""

        def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
            coeff, std = _mean_coeff_and_std(sde, t)
            means = coeff[:, None, None] * self.means[None]  # [B, K, D]
            var = (coeff[:, None] * self.stds[None]) ** 2 + std[:, None] ** 2  # [B, K]
            flat = x.reshape(x.shape[0], -1)
            sq = jnp.sum((flat[:, None, :] - means) ** 2, axis=-1)
            logits = jnp.log(self.weights) - 0.5 * self.dim * jnp.log(var) - 0.5 * sq / var
            resp = jax.nn.softmax(logits, axis=-1)
            score = jnp.sum(resp[..., None] * (means - flat[:, None, :]) / var[..., None], axis=1)
            return score.reshape(x.shape)

        return score_fn


def _mean_coeff_and_std(sde: SDE, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean coefficient a(t) [B] and std(t) [B] of the SDE's perturbation kernel."""
    mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    return mean[:, 0], std


def _class_logits(gm: GaussianMixture, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    coeff, std = _mean_coeff_and_std(sde, t)
    means = coeff[:, None, None] * gm.means[None]  # [B, K, D]
    var = (coeff[:, None] * gm.stds[None]) ** 2 + std[:, None] ** 2  # [B, K]
    flat = x.reshape(x.shape[0], -1)
    sq = jnp.sum((flat[:, None, :] - means) ** 2, axis=-1)
    return jnp.log(gm.weights) - 0.5 * gm.dim * jnp.log(var) - 0.5 * sq / var


def mixture_class_logits_fn(gm: GaussianMixture, sde: SDE):
    """logits_fn(x [B, ...], t [B]) -> log p_t(k | x) [B, K]: the exact noise-conditional
    classifier when each mixture component is a class (softmax-normalised)."""

    def logits_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(_class_logits(gm, sde, x, t), axis=-1)

    return logits_fn


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """N(mean, cov) with a full covariance; mean [D], cov [D, D] symmetric positive definite.

    Under a linear SDE p_t = N(a mean, a^2 cov + std^2 I), whose score is exact for every t
    through the eigendecomposition cov = U diag(lam) U^T computed once here."""

    mean: jax.Array
    cov: jax.Array

    def __post_init__(self):
        mean = jnp.asarray(self.mean, float)
        cov = jnp.asarray(self.cov, float)
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"Gaussian needs mean [D] and cov [D, D]; got {mean.shape}, {cov.shape}"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", 0.5 * (cov + cov.T))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n exact samples [n, D]."""
        chol = jnp.linalg.cholesky(self.cov)
        return self.mean + jax.random.normal(key, (n, self.dim)) @ chol.T

    def conditional(self, known: jax.Array, values: jax.Array) -> Gaussian:
        """p(x_u | x_k = values[known]) over the unknown coordinates (known: bool [D])."""
        known = jnp.asarray(known, bool)
        k, u = jnp.flatnonzero(known), jnp.flatnonzero(~known)
        s_kk, s_uk = self.cov[k][:, k], self.cov[u][:, k]
        gain = jnp.linalg.solve(s_kk, s_uk.T).T  # S_uk S_kk^-1
        mean = self.mean[u] + gain @ (jnp.asarray(values)[k] - self.mean[k])
        return Gaussian(mean, self.cov[u][:, u] - gain @ s_uk.T)

    def linear(self, matrix: jax.Array) -> Gaussian:
        """The law of matrix @ x: N(A mean, A cov A^T)."""
        matrix = jnp.asarray(matrix, float)
        return Gaussian(matrix @ self.mean, matrix @ self.cov @ matrix.T)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """score_fn(x [B, ...] with D entries per example, t [B]) -> exact score of p_t."""
        lam, vecs = jnp.linalg.eigh(self.cov)

        def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
            coeff, std = _mean_coeff_and_std(sde, t)
            centred = x.reshape(x.shape[0], -1) - coeff[:, None] * self.mean
            var = coeff[:, None] ** 2 * lam + std[:, None] ** 2  # [B, D] eigenvalues of cov_t
            return (-((centred @ vecs) / var) @ vecs.T).reshape(x.shape)

        return score_fn
