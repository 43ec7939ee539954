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
from typing import ClassVar, Protocol

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

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def log_snr(self, t: jax.Array) -> jax.Array: ...

    def t_from_log_snr(self, lam: jax.Array) -> jax.Array: ...

    def edm_sigma(self, t: jax.Array) -> jax.Array: ...

    def t_from_edm_sigma(self, sigma: jax.Array) -> jax.Array: ...

    def data_prediction(self, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array: ...

    # The likelihood weighting's importance sampling (`sample_likelihood_times`): an
    # antiderivative F of g(t)^2 / std(t)^2 and its inverse.
    def likelihood_weight_integral(self, t: jax.Array) -> jax.Array: ...

    def t_from_likelihood_weight_integral(self, f: jax.Array) -> jax.Array: ...

    # What the official code does differently per SDE: network labels and output, the default
    # sampling end time, the discrete chain (SMLD, DDPM or none) and the Langevin step factors.
    sampling_eps: float
    discrete_chain: str | None

    def noise_labels(self, t: jax.Array, continuous: bool) -> jax.Array: ...

    def output_to_score(self, out: jax.Array, t: jax.Array, continuous: bool) -> jax.Array: ...

    def discrete_alpha(self, t: jax.Array) -> jax.Array: ...

    def ald_alpha(self, t: jax.Array) -> jax.Array: ...


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

    # The fast samplers' view of an SDE: its perturbation kernel x_t = alpha_t x_0 + sigma_t z.
    # Every linear SDE here is fixed by that pair: f = d log(alpha)/dt and
    # g^2 = d(sigma^2)/dt - 2 f sigma^2 = -2 sigma^2 d(lambda)/dt, lambda = log(alpha / sigma).
    # The methods act elementwise on t of any shape (a scalar time or a batch [B]).

    def edm_sigma(self, t: jax.Array) -> jax.Array:
        """EDM's noise level sigma_t / alpha_t = exp(-lambda(t)) of x_t / alpha_t."""
        return jnp.exp(-self.log_snr(t))

    def t_from_edm_sigma(self, sigma: jax.Array) -> jax.Array:
        """The time t whose EDM noise level is `sigma`: the inverse of `edm_sigma`."""
        return self.t_from_log_snr(-jnp.log(sigma))

    def data_prediction(self, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
        """Tweedie's E[x_0 | x_t] = (x + sigma_t^2 score) / alpha_t from the score at (x [B, ...],
        t [B])."""
        alpha, sigma = self.alpha_sigma(t)
        return (x + batch_broadcast(sigma**2, x) * score) / batch_broadcast(alpha, x)


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

    def alpha_sigma(self, t):
        """(1, sigma(t)): VE adds noise without scaling the data."""
        return jnp.ones_like(t), self.sigma(t)

    def log_snr(self, t):
        """lambda(t) = -log sigma(t), linear in t."""
        return -(math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min))

    def t_from_log_snr(self, lam):
        return (-lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

    def prior_sampling(self, key, shape):
        return jax.random.normal(key, shape) * self.sigma_max

    def likelihood_weight_integral(self, t):
        """g^2 / sigma^2 = 2 log(smax / smin) is constant: F(t) = 2 log(smax / smin) t, and the
        importance-sampling proposal is uniform."""
        return 2.0 * math.log(self.sigma_max / self.sigma_min) * t

    def t_from_likelihood_weight_integral(self, f):
        return f / (2.0 * math.log(self.sigma_max / self.sigma_min))

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

    # Official sampling end time; the discrete chain is SMLD's (its loss, ancestral sampling).
    sampling_eps: ClassVar[float] = 1e-5
    discrete_chain: ClassVar[str | None] = "smld"

    def noise_labels(self, t: jax.Array, continuous: bool) -> jax.Array:
        """Network labels for t [B]: sigma(t), or (discrete) the index round((T - t)(N - 1)) of
        the descending SMLD levels (label 0 is sigma_max), as the official NCSN networks take."""
        if continuous:
            return self.sigma(t)
        return jnp.round((self.T - t) * (self.N - 1)).astype(jnp.int32)

    def output_to_score(self, out: jax.Array, t: jax.Array, continuous: bool) -> jax.Array:
        """VE networks output the score itself (scaled by 1 / sigma inside the network)."""
        del t, continuous
        return out

    def discrete_alpha(self, t: jax.Array) -> jax.Array:
        """1 [B]: the SMLD chain does not scale x (the Langevin correctors' alpha)."""
        return jnp.ones_like(t)

    def ald_alpha(self, t: jax.Array) -> jax.Array:
        return self.discrete_alpha(t)

    def ancestral_step(
        self, x: jax.Array, score: jax.Array, t: jax.Array, noise: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """SMLD's posterior step from level i to i - 1 (paper, App. F): (x, x_mean)."""
        i = self.timestep(t)
        sigmas = jnp.asarray(self.discrete_sigmas)
        var = sigmas[i] ** 2
        prev_var = jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)] ** 2)
        x_mean = x + batch_broadcast(var - prev_var, x) * score
        std = jnp.sqrt(prev_var * (var - prev_var) / var)
        return x_mean + batch_broadcast(std, x) * noise, x_mean

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

    def _t_from_integrated_beta(self, B: jax.Array) -> jax.Array:
        """The t >= 0 with int_0^t beta = B, the positive root of the quadratic, written so that
        it loses no digits at small B."""
        delta = self.beta_max - self.beta_min
        return 2.0 * B / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * delta * B))

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

    sampling_eps: ClassVar[float] = 1e-3

    def discrete_alpha(self, t: jax.Array) -> jax.Array:
        """alpha_i = 1 - beta_i [B] of the DDPM chain at t (the Langevin correctors' alpha). The
        official code reads it for sub-VP too (where the table is missing, so it crashes);
        sub-VP shares the beta schedule, so it gets the same alpha_i."""
        return jnp.asarray(self.alphas)[self.timestep(t)]

    def ald_alpha(self, t: jax.Array) -> jax.Array:
        return self.discrete_alpha(t)

    def _marginal_std(self, t: jax.Array) -> jax.Array:
        return self.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]


@dataclasses.dataclass(frozen=True)
class VPSDE(_BetaSchedule):
    """Variance preserving: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw (continuous DDPM)."""

    def sde(self, x, t):
        beta_t = self.beta(t)
        return -0.5 * batch_broadcast(beta_t, x) * x, jnp.sqrt(beta_t)

    def marginal_prob(self, x, t):
        lmc = self.log_mean_coeff(t)
        return batch_broadcast(jnp.exp(lmc), x) * x, jnp.sqrt(1.0 - jnp.exp(2.0 * lmc))

    def alpha_sigma(self, t):
        """(alpha, sqrt(1 - alpha^2)), alpha = exp(-1/2 int_0^t beta)."""
        lmc = self.log_mean_coeff(t)
        return jnp.exp(lmc), jnp.sqrt(-jnp.expm1(2.0 * lmc))

    def log_snr(self, t):
        lmc = self.log_mean_coeff(t)
        return lmc - 0.5 * jnp.log(-jnp.expm1(2.0 * lmc))

    def t_from_log_snr(self, lam):
        """exp(-2 lambda) = 1 / alpha^2 - 1, so int_0^t beta = log(1 + exp(-2 lambda))."""
        return self._t_from_integrated_beta(jnp.logaddexp(0.0, -2.0 * lam))

    def likelihood_weight_integral(self, t):
        """g^2 / std^2 = beta / (1 - exp(-B)), B = int_0^t beta, is d/dt log(exp(B) - 1)."""
        return jnp.log(jnp.expm1(-2.0 * self.log_mean_coeff(t)))

    def t_from_likelihood_weight_integral(self, f):
        """exp(B) - 1 = exp(f), so B = log(1 + exp(f))."""
        return self._t_from_integrated_beta(jnp.logaddexp(0.0, f))

    discrete_chain: ClassVar[str | None] = "ddpm"

    def noise_labels(self, t: jax.Array, continuous: bool) -> jax.Array:
        """999 t (continuous), or t (N - 1) left unrounded as the official DDPM code passes it."""
        return t * 999 if continuous else t * (self.N - 1)

    def output_to_score(self, out: jax.Array, t: jax.Array, continuous: bool) -> jax.Array:
        """-out / std: the network predicts the noise. Discrete: std from the DDPM table at the
        truncated index, as the official code."""
        if continuous:
            std = self._marginal_std(t)
        else:
            std = jnp.asarray(self.sqrt_1m_alphas_cumprod)[(t * (self.N - 1)).astype(jnp.int32)]
        return -out / batch_broadcast(std, out)

    def ancestral_step(
        self, x: jax.Array, score: jax.Array, t: jax.Array, noise: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """DDPM's posterior step from level i to i - 1 (paper, App. F): (x, x_mean)."""
        beta = batch_broadcast(jnp.asarray(self.discrete_betas)[self.timestep(t)], x)
        x_mean = (x + beta * score) / jnp.sqrt(1.0 - beta)
        return x_mean + jnp.sqrt(beta) * noise, x_mean

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

    def alpha_sigma(self, t):
        """(alpha, 1 - alpha^2): the same mean as VP, the square of its variance. Not on the
        unit circle, which no fast sampler here needs (see the note on _SDEBase)."""
        lmc = self.log_mean_coeff(t)
        return jnp.exp(lmc), -jnp.expm1(2.0 * lmc)

    def log_snr(self, t):
        lmc = self.log_mean_coeff(t)
        return lmc - jnp.log(-jnp.expm1(2.0 * lmc))

    def t_from_log_snr(self, lam):
        """alpha exp(-lambda) = 1 - alpha^2 gives alpha = 1 / exp(arcsinh(exp(-lambda) / 2)), so
        int_0^t beta = -2 log alpha = 2 arcsinh(exp(-lambda) / 2)."""
        return self._t_from_integrated_beta(2.0 * jnp.arcsinh(0.5 * jnp.exp(-lam)))

    def likelihood_weight_integral(self, t):
        """g^2 / std^2 = beta (1 + e^-B) / (1 - e^-B), B = int_0^t beta, is the derivative of
        B + 2 log(1 - e^-B) = 2 log(2 sinh(B / 2))."""
        B = -2.0 * self.log_mean_coeff(t)
        return B + 2.0 * jnp.log(-jnp.expm1(-B))

    def t_from_likelihood_weight_integral(self, f):
        """2 sinh(B / 2) = exp(f / 2), so B = 2 arcsinh(exp(f / 2) / 2)."""
        return self._t_from_integrated_beta(2.0 * jnp.arcsinh(0.5 * jnp.exp(0.5 * f)))

    # No discrete chain: no SMLD/DDPM loss and no ancestral sampling for sub-VP.
    discrete_chain: ClassVar[str | None] = None

    def noise_labels(self, t: jax.Array, continuous: bool) -> jax.Array:
        """999 t, continuous or not (the official code has no discrete sub-VP labels)."""
        del continuous
        return t * 999

    def output_to_score(self, out: jax.Array, t: jax.Array, continuous: bool) -> jax.Array:
        """-out / std(t), the marginal standard deviation."""
        del continuous
        return -out / batch_broadcast(self._marginal_std(t), out)

    def ald_alpha(self, t: jax.Array) -> jax.Array:
        """alpha_i / std(t): see `sampling.correctors.ald` for why sub-VP takes the VP step."""
        return self.discrete_alpha(t) / self._marginal_std(t)


def likelihood_proposal_scale(sde: SDE, eps: float) -> jax.Array:
    """Z / (T - eps), Z = F(T) - F(eps) = int_eps^T g^2 / std^2 dt (F =
    sde.likelihood_weight_integral): the importance weight of `sample_likelihood_times`' times.

    Song et al. (2021), "Maximum likelihood training of score-based diffusion models": with t
    from p(t) = g^2 / std^2 / Z, the uniform density q = 1 / (T - eps) and
    q / p * g^2 |s + z / std|^2 = Z / (T - eps) * |s std + z|^2, the latter estimates the
    likelihood-weighted objective E_{t ~ U(eps, T)} g^2 |s + z / std|^2 without bias.
    """
    lo, hi = sde.likelihood_weight_integral(jnp.asarray([eps, sde.T], jnp.float32))
    return (hi - lo) / (sde.T - eps)


def sample_likelihood_times(sde: SDE, key: jax.Array, n: int, eps: float) -> jax.Array:
    """Times t [n] on [eps, T] with density p(t) proportional to g(t)^2 / std(t)^2, by inverting
    F = sde.likelihood_weight_integral at uniform points of [F(eps), F(T)]."""
    lo, hi = sde.likelihood_weight_integral(jnp.asarray([eps, sde.T], jnp.float32))
    u = jax.random.uniform(key, (n,), jnp.float32)
    t = sde.t_from_likelihood_weight_integral(lo + u * (hi - lo))
    # Float rounding in the inverse may step just outside [eps, T].
    return jnp.clip(t, eps, sde.T)


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
