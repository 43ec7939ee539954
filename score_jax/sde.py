"""Forward SDEs of score-based generative modelling: VE, VP and sub-VP (Song et al., 2021).

Each SDE is a frozen, hashable dataclass, so it can be closed over or passed as a static argument
to `jax.jit` without retracing for an equal SDE. Batched time `t` has shape [B]; `x` has shape
[B, ...]. The discrete tables (SMLD sigmas, DDPM betas and products) are float32 numpy arrays,
computed in float64 once per SDE.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_broadcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-example vector v [B] so that it broadcasts against x [B, ...]."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _sum_non_batch(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _check_steps(N: int) -> None:
    if not isinstance(N, int | np.integer) or N < 1:
        raise ValueError(f"N must be an integer >= 1 (number of discretisation steps), got {N!r}")


class SDE(Protocol):
    """What every SDE provides (see the concrete classes for the formulas)."""

    N: int

    @property
    def T(self) -> float: ...

    def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def prior_sampling(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array: ...

    def prior_logp(self, z: jax.Array) -> jax.Array: ...

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE: ...


class _SDEBase:
    """Shared pieces: T, the Euler-Maruyama discretisation and the reverse-time SDE."""

    @property
    def T(self) -> float:
        return 1.0

    def euler_maruyama_discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """f = drift * dt, G = diffusion * sqrt(dt) with dt = T / N."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.euler_maruyama_discretize(x, t)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        return ReverseSDE(self, score_fn, probability_flow)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """The reverse-time SDE dx = [f - g^2 s] dt + g dw_bar, or the probability-flow ODE
    dx = [f - g^2 s / 2] dt when `probability_flow`."""

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.forward.T

    @property
    def N(self) -> int:
        return self.forward.N

    def _weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - batch_broadcast(diffusion**2, x) * score * self._weight()
        if self.probability_flow:
            diffusion = jnp.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_broadcast(G**2, x) * self.score_fn(x, t) * self._weight()
        rev_G = jnp.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


def _standard_normal_logp(z: jax.Array, scale: float) -> jax.Array:
    n = math.prod(z.shape[1:])
    return -0.5 * n * math.log(2 * math.pi * scale**2) - _sum_non_batch(z**2) / (2 * scale**2)


@dataclasses.dataclass(frozen=True)
class VESDE(_SDEBase):
    """Variance exploding: dx = sqrt(d sigma^2(t)/dt) dw, sigma(t) = smin (smax/smin)^t."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000

    def __post_init__(self):
        if not self.sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got {self.sigma_min!r}")
        if not self.sigma_min < self.sigma_max:
            raise ValueError(
                f"sigma_min must be < sigma_max, got sigma_min={self.sigma_min!r} "
                f"and sigma_max={self.sigma_max!r}"
            )
        _check_steps(self.N)

    def sigma(self, t: jax.Array) -> jax.Array:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        drift = jnp.zeros_like(x)
        log_ratio = math.log(self.sigma_max) - math.log(self.sigma_min)
        diffusion = self.sigma(t) * math.sqrt(2 * log_ratio)
        return drift, diffusion

    def marginal_prob(self, x, t):
        return x, self.sigma(t)

    def prior_sampling(self, key, shape):
        return jax.random.normal(key, shape) * self.sigma_max

    def prior_logp(self, z):
        return _standard_normal_logp(z, self.sigma_max)

    @functools.cached_property
    def discrete_sigmas(self) -> np.ndarray:
        """SMLD noise levels sigma_0 < ... < sigma_{N-1}, geometric from sigma_min to sigma_max."""
        levels = np.exp(np.linspace(np.log(self.sigma_min), np.log(self.sigma_max), self.N))
        return levels.astype(np.float32)

    def timestep(self, t: jax.Array) -> jax.Array:
        """Index i of the discrete level for continuous t (truncation, as the official code)."""
        return (t * (self.N - 1) / self.T).astype(jnp.int32)

    def discretize(self, x, t):
        """SMLD chain: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z, with sigma_{-1} = 0."""
        i = self.timestep(t)
        sigmas = jnp.asarray(self.discrete_sigmas)
        sigma = sigmas[i]
        adjacent = jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)


@dataclasses.dataclass(frozen=True)
class _BetaSchedule(_SDEBase):
    """Linear beta(t) = beta_min + t (beta_max - beta_min) shared by VP and sub-VP."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

    def __post_init__(self):
        if not self.beta_min >= 0:
            raise ValueError(f"beta_min must be >= 0, got {self.beta_min!r}")
        if not self.beta_max > self.beta_min:
            raise ValueError(
                f"beta_max must be > beta_min, got beta_min={self.beta_min!r} "
                f"and beta_max={self.beta_max!r}"
            )
        _check_steps(self.N)

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: jax.Array) -> jax.Array:
        """log of the mean coefficient exp(-1/2 int_0^t beta)."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def prior_sampling(self, key, shape):
        return jax.random.normal(key, shape)

    def prior_logp(self, z):
        return _standard_normal_logp(z, 1.0)

    @functools.cached_property
    def _tables(self) -> dict[str, np.ndarray]:
        betas = np.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_1m_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        }
        return {k: v.astype(np.float32) for k, v in tables.items()}

    @property
    def discrete_betas(self) -> np.ndarray:
        """DDPM betas_i = linspace(beta_min / N, beta_max / N, N)."""
        return self._tables["betas"]

    @property
    def alphas(self) -> np.ndarray:
        return self._tables["alphas"]

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return self._tables["alphas_cumprod"]

    @property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        return self._tables["sqrt_alphas_cumprod"]

    @property
    def sqrt_1m_alphas_cumprod(self) -> np.ndarray:
        return self._tables["sqrt_1m_alphas_cumprod"]

    def timestep(self, t: jax.Array) -> jax.Array:
        return (t * (self.N - 1) / self.T).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class VPSDE(_BetaSchedule):
    """Variance preserving: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw (continuous DDPM)."""

    def sde(self, x, t):
        beta_t = self.beta(t)
        return -0.5 * batch_broadcast(beta_t, x) * x, jnp.sqrt(beta_t)

    def marginal_prob(self, x, t):
        lmc = self.log_mean_coeff(t)
        return batch_broadcast(jnp.exp(lmc), x) * x, jnp.sqrt(1.0 - jnp.exp(2.0 * lmc))

    def discretize(self, x, t):
        """DDPM chain: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z."""
        i = self.timestep(t)
        beta = jnp.asarray(self.discrete_betas)[i]
        alpha = jnp.asarray(self.alphas)[i]
        f = batch_broadcast(jnp.sqrt(alpha), x) * x - x
        return f, jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class SubVPSDE(_BetaSchedule):
    """sub-VP: dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw."""

    def sde(self, x, t):
        beta_t = self.beta(t)
        discount = 1.0 - jnp.exp(-2.0 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return -0.5 * batch_broadcast(beta_t, x) * x, jnp.sqrt(beta_t * discount)

    def marginal_prob(self, x, t):
        lmc = self.log_mean_coeff(t)
        return batch_broadcast(jnp.exp(lmc), x) * x, 1.0 - jnp.exp(2.0 * lmc)


SDES: dict[str, type] = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": SubVPSDE}


def get_sde(config) -> SDE:
    """Builds the SDE named by `config.training.sde` with the model's noise schedule."""
    name = config.training.sde.lower()
    m = config.model
    if name == "vesde":
        return VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
    if name in ("vpsde", "subvpsde"):
        return SDES[name](beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
    raise ValueError(f"config.training.sde must be one of {sorted(SDES)}, got {name!r}")
