"""Exact log-likelihood through the probability-flow ODE, and bits per dimension.

The probability-flow ODE dx/dt = f(x, t) - g(t)^2 score(x, t) / 2 carries data at t = eps to a
latent z at t = T, and by the instantaneous change of variables

    log p_eps(x) = log p_T(z) + int_eps^T div f~(x_t, t) dt,

where f~ is that drift. We integrate the state (x_t, int div) jointly with the adaptive
Dormand-Prince 5(4) method of the official scipy RK45 call, as a diffrax solve with scipy's error
estimate and step control (`score_jax.rk45`), and replace the unknown p_T by the SDE's prior, as
the official code does.

The divergence is either the Hutchinson-Skilling estimate v^T (df~/dx) v with Rademacher or
Gaussian probes v (one vector-Jacobian product per evaluation, averaged over `num_probes`), or
the exact trace from one Jacobian-vector product per dimension (only for small dimensions).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import rk45
from score_jax.data import to_float  # the data pipeline's one uint8 -> float rule
from score_jax.sde import SDE, ScoreFn

HUTCHINSON_TYPES = ("rademacher", "gaussian", "exact")

# (t scalar, (x [B, ...], divergence integral [B]), probes [P, B, ...] or None) -> d/dt of state.
AugmentedDrift = Callable[
    [jax.Array, tuple[jax.Array, jax.Array], jax.Array | None], tuple[jax.Array, jax.Array]
]


def _sum_non_batch(v: jax.Array) -> jax.Array:
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def _check_hutchinson(hutchinson: str) -> None:
    if hutchinson not in HUTCHINSON_TYPES:
        raise ValueError(f"hutchinson must be one of {HUTCHINSON_TYPES}, got {hutchinson!r}")


def probability_flow_drift(
    score_fn: ScoreFn, sde: SDE
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """drift(x [B, ...], t [B]) of the probability-flow ODE, f - g^2 score / 2."""
    reverse = sde.reverse(score_fn, probability_flow=True)
    return lambda x, t: reverse.sde(x, t)[0]


def augmented_drift(score_fn: ScoreFn, sde: SDE, hutchinson: str = "rademacher") -> AugmentedDrift:
    """Vector field of the ODE on (x, int div): returns (drift [B, ...], divergence [B]).

    Hutchinson types cost one forward and one vector-Jacobian product per call (the VJP is
    batched over the probes [P, B, ...], and the estimate is their mean); "exact" costs one
    forward and D Jacobian-vector products batched together (probes must be None).
    """
    _check_hutchinson(hutchinson)
    return _field(score_fn, sde, exact=hutchinson == "exact")


def _field(score_fn: ScoreFn, sde: SDE, exact: bool) -> AugmentedDrift:
    # Gaussian and Rademacher probes differ only in how they are drawn, so they share one field
    # (and one compiled solve).
    drift_fn = probability_flow_drift(score_fn, sde)

    def field(t, state, probes):
        x = state[0]
        vec_t = jnp.full((x.shape[0],), t, dtype=x.dtype)
        f = functools.partial(drift_fn, t=vec_t)
        if exact:
            drift, jvp_fn = jax.linearize(f, x)
            dim = math.prod(x.shape[1:])

            def diagonal_entry(i):
                # The same one-hot tangent for every example: examples do not interact, so the
                # output's entry i is d drift_i / d x_i of each example.
                basis = jnp.zeros((dim,), x.dtype).at[i].set(1).reshape(x.shape[1:])
                column = jvp_fn(jnp.broadcast_to(basis, x.shape))
                return column.reshape(x.shape[0], dim)[:, i]

            divergence = jnp.sum(jax.vmap(diagonal_entry)(jnp.arange(dim)), axis=0)
        else:
            drift, vjp_fn = jax.vjp(f, x)
            (grads,) = jax.vmap(vjp_fn)(probes)
            products = jax.vmap(_sum_non_batch)(grads * probes)  # [P, B]
            divergence = jnp.mean(products, axis=0)
        return drift, divergence

    return field


def draw_probes(key: jax.Array, hutchinson: str, shape: Sequence[int], num_probes: int = 1):
    """Hutchinson probes [num_probes, *shape]: +-1 (Rademacher) or standard normal (Gaussian)."""
    full = (num_probes, *shape)
    if hutchinson == "rademacher":
        return jax.random.rademacher(key, full, dtype=jnp.float32)
    if hutchinson == "gaussian":
        return jax.random.normal(key, full, dtype=jnp.float32)
    raise ValueError(f"probes exist only for 'rademacher' and 'gaussian', got {hutchinson!r}")


def _solve(x, probes, *, score_fn, sde, exact, rtol, atol, eps, max_steps):
    field = _field(score_fn, sde, exact)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        rk45.ScipyDopri5(),
        t0=eps,
        t1=sde.T,
        dt0=None,
        y0=(x, jnp.zeros((x.shape[0],), x.dtype)),
        args=probes,
        stepsize_controller=rk45.ScipyRK45Controller(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    z = solution.ys[0][0]
    delta_logp = solution.ys[1][0]
    nfe = rk45.count_evaluations(solution.stats["num_steps"])
    return sde.prior_logp(z) + delta_logp, z, nfe


_STATIC = ("score_fn", "sde", "exact", "rtol", "atol", "eps", "max_steps")
_solve_jit = jax.jit(_solve, static_argnames=_STATIC)


def log_likelihood(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: jax.Array,
    hutchinson: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    noise: jax.Array | None = None,
    num_probes: int = 1,
    max_steps: int = 4096,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """log p(x) in nats [B], the latent z [B, ...] and the number of drift evaluations.

    x [B, ...] is in the model's data space (after the scaler). The result is
    prior_logp(z) + int_eps^T div dt, with the divergence from `hutchinson`, averaged over
    `num_probes` probes drawn from `key`, or over the given `noise` ([B, ...] or [P, B, ...]).
    The solve is one compiled program, cached per (score_fn, sde, options, shapes): pass the same
    score_fn object to reuse it, or call this inside your own jax.jit with the model parameters
    as arguments. The examples share the step sizes (error norm over the whole batch, as scipy's
    on the official flattened batch), so a result depends on its batch at the tolerance level.
    """
    _check_hutchinson(hutchinson)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point (scaled data), got dtype {x.dtype}")
    if jnp.ndim(x) < 2:
        raise ValueError(f"x must have shape [B, ...] with a batch axis, got {jnp.shape(x)}")
    if not (isinstance(num_probes, int) and num_probes >= 1):
        raise ValueError(f"num_probes must be an integer >= 1, got {num_probes!r}")
    if hutchinson == "exact":
        if noise is not None:
            raise ValueError("noise must be None when hutchinson='exact' (there are no probes)")
        probes = None
    elif noise is None:
        probes = draw_probes(key, hutchinson, x.shape, num_probes)
    else:
        probes = jnp.asarray(noise, x.dtype)
        if probes.shape == x.shape:
            probes = probes[None]
        if probes.shape[1:] != x.shape or num_probes not in (1, probes.shape[0]):
            raise ValueError(
                f"noise must have shape {x.shape} or [num_probes, *{x.shape}], got "
                f"{jnp.shape(noise)} with num_probes={num_probes}"
            )
    # Called inside the caller's jit (score_fn closing over traced parameters), the solve simply
    # joins that program; called eagerly, it is compiled once per static configuration.
    inside_trace = any(isinstance(a, jax.core.Tracer) for a in (x, probes))
    return (_solve if inside_trace else _solve_jit)(
        x,
        probes,
        score_fn=score_fn,
        sde=sde,
        exact=hutchinson == "exact",
        rtol=float(rtol),
        atol=float(atol),
        eps=float(eps),
        max_steps=int(max_steps),
    )


def bpd_offset(inverse_scaler: Callable[[float], float], levels: int = 256) -> float:
    """The offset log2(levels) - 1 - inverse_scaler(-1); for 8-bit data the official
    7 - inverse_scaler(-1): 8 for data in [0, 1], 7 for data in [-1, 1].

    It converts a density on the model's data space into bits per dimension of the quantized
    data: an image in [0, 1] is k / levels up to dequantization, so a density on [0, 1]^D is
    levels^D times smaller per unit than one on the grid of levels (log2(levels) bits per
    dimension); data centred to [-1, 1] spans twice the width, which gives back one bit.
    """
    return math.log2(levels) - 1.0 - float(inverse_scaler(-1.0))


def bits_per_dim(logp_nats: jax.Array, x_shape: Sequence[int], offset: float) -> jax.Array:
    """bits/dim [B] = -logp / ln 2 / D + offset, with D = prod(x_shape[1:]).

    x_shape is the shape of the batch the log-likelihoods belong to, batch axis first. With
    data uniformly dequantized from L levels, x = scaler((k + u) / L), u ~ U[0, 1)^D, and the
    offset of `bpd_offset`, the result is the number of bits per dimension a code built from the
    model would spend on the discrete image k; its mean over u is an upper bound on
    -log2 P(k) / D (Jensen), the number reported in the paper (L = 256).
    """
    logp_nats = jnp.asarray(logp_nats)
    x_shape = tuple(x_shape)
    if len(x_shape) < 2 or logp_nats.shape != x_shape[:1]:
        raise ValueError(
            "bits_per_dim needs x_shape = (B, ...) of the data with logp_nats of shape (B,); got "
            f"x_shape={x_shape} and logp_nats.shape={logp_nats.shape}"
        )
    dim = math.prod(x_shape[1:])
    return -logp_nats / math.log(2.0) / dim + offset


@functools.partial(jax.jit, static_argnames="levels")
def dequantize(
    key: jax.Array,
    images: jax.Array,
    example_ids: jax.Array,
    repeat: int | jax.Array = 0,
    levels: int = 256,
) -> jax.Array:
    """Uniform dequantization of uint8 images [B, ...] of `levels` levels to (k + u) / levels
    in [0, 1), float32 (k + u) / 256 for 8-bit data; see `score_jax.data.to_float`.

    The noise of example i in pass `repeat` comes from fold_in(fold_in(key, repeat), i), with i
    the example's index in the dataset (example_ids [B]), so it is the same whatever batch, device
    or host the example lands on, and each repeat of the evaluation set sees fresh noise.
    """
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8:
        raise ValueError(f"dequantize expects uint8 images, got dtype {images.dtype}")
    pass_key = jax.random.fold_in(key, repeat)
    keys = jax.vmap(lambda i: jax.random.fold_in(pass_key, i))(jnp.asarray(example_ids))
    return jax.vmap(lambda k, im: to_float(im, k, dequantize=True, levels=levels))(keys, images)


def check_unit_range(images: np.ndarray, name: str = "images") -> None:
    """Refuses float data outside [0, 1] (e.g. 0..255 floats) before it becomes a wrong bits/dim.

    uint8 data is always acceptable (it is dequantized to [0, 1)). Runs on the host.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {images.dtype}")
    low, high = float(np.min(images)), float(np.max(images))
    if low < 0.0 or high > 1.0 or not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(
            f"{name} must lie in [0, 1] (the data space before the scaler), found values in "
            f"[{low:g}, {high:g}]; 8-bit data should be passed as uint8"
        )
