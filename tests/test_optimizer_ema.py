"""Adam with warm-up, clipping and weight decay, and both EMA rules, against hand computations.

The hand computations are plain float64 numpy transcriptions of the official update rules
(score_sde's optimization_manager and flax.optim.Adam; TF's ExponentialMovingAverage with
num_updates for the 'warmup' EMA rule), written independently of score_jax.train.optimizer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, initial_train_setup

from score_jax import parallel
from score_jax.config import load_config
from score_jax.train.optimizer import get_optimizer

# Gradients of three updates; the second has global norm 13 > grad_clip, the others are below it.
GRADS = [np.array([0.3, -0.4]), np.array([5.0, 12.0]), np.array([-0.2, 0.1])]
PARAMS = np.array([1.0, -2.0])


def optim_config(**optim):
    config = load_config(REPO / "configs/toy/mixture_vp.py")
    config.optim.update(
        dict(lr=0.1, warmup=2, beta1=0.9, eps=1e-8, grad_clip=1.0, weight_decay=0.0) | optim
    )
    return config


def hand_adam(lr, warmup, clip, weight_decay, cosine_over=None, beta1=0.9, beta2=0.999, eps=1e-8):
    """Parameters after each update, in float64, from the official formulas; cosine_over = N
    also scales update n's rate by (1 + cos(pi (n - warmup) / (N - warmup))) / 2 past warmup."""
    p, m, v = PARAMS.copy(), np.zeros(2), np.zeros(2)
    history = []
    for n, g in enumerate(GRADS):  # n = 0 for the first update, as the official step counter
        if clip >= 0:
            g = g * clip / max(np.linalg.norm(g), clip)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat, v_hat = m / (1 - beta1 ** (n + 1)), v / (1 - beta2 ** (n + 1))
        rate = lr * min(n / warmup, 1.0) if warmup > 0 else lr
        if cosine_over is not None:
            rate *= (1 + np.cos(np.pi * max(n - warmup, 0) / (cosine_over - warmup))) / 2
        p = p - rate * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p)
        history.append(p.copy())
    return history


def run_optimizer(config):
    optimizer = get_optimizer(config)
    params = {"w": jnp.asarray(PARAMS, jnp.float32)}
    state = optimizer.init(params)
    history = []
    for g in GRADS:
        updates, state = optimizer.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        history.append(np.asarray(params["w"], np.float64))
    return history


@pytest.mark.parametrize(
    "optim",
    [
        dict(),  # warm-up over 2 updates, clipping at 1
        dict(grad_clip=-1.0),  # no clipping: the second update sees the raw gradient
        dict(weight_decay=0.05, warmup=0),  # decoupled decay, constant learning rate
        # Cosine to 0 at n_iters = 3 after 1 warm-up update: updates at 0, lr and lr / 2.
        dict(lr_decay="cosine", warmup=1),
    ],
    ids=["warmup_clip", "no_clip", "weight_decay", "cosine"],
)
def test_adam_updates_equal_hand_computation(optim):
    config = optim_config(**optim)
    config.training.n_iters = 3
    o = config.optim
    cosine_over = config.training.n_iters if o.lr_decay == "cosine" else None
    expected = hand_adam(o.lr, o.warmup, o.grad_clip, o.weight_decay, cosine_over)
    got = run_optimizer(config)
    # float32 arithmetic on O(1) numbers over three updates: a few ulp of 2.
    np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=0, atol=2e-6)
    if o.warmup > 0:
        # The first update runs at learning rate 0 (lr * 0 / warmup), as in both official codes.
        np.testing.assert_array_equal(got[0], PARAMS.astype(np.float32))
        assert np.abs(got[1] - PARAMS).max() > 1e-3


def hand_ema(history, rate, rule):
    """EMA after each update: ema_n = d_n ema_{n-1} + (1 - d_n) params_n, ema_0 = params_0."""
    ema = history[0]
    out = []
    for n, params in enumerate(history[1:], start=1):
        decay = rate if rule == "fixed" else min(rate, (1.0 + n) / (10.0 + n))
        ema = jax.tree.map(lambda e, p, d=decay: d * e + (1.0 - d) * p, ema, params)
        out.append(ema)
    return out


@pytest.mark.parametrize(("rule", "rate"), [("fixed", 0.8), ("warmup", 0.999)])
def test_ema_of_the_real_train_step_equals_hand_computation(rule, rate):
    """Three real training steps (4 devices); the EMA follows each step's new parameters."""
    config = optim_config(lr=0.05, warmup=0)
    config.model.nf = 16
    config.model.num_res_blocks = 1
    config.model.ema_rate = rate
    config.training.ema_rule = rule
    config.training.batch_size = 8
    mesh = parallel.make_mesh()
    state, train_step = initial_train_setup(config, mesh)
    points = np.random.default_rng(0).normal(size=(3, 1, 8, 2)).astype(np.float32)

    def host(tree):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0), np.float64), tree)

    history, emas = [host(state.params)], []
    for images in points:
        state, _ = train_step(state, parallel.host_batch_to_global(images, mesh, batch_axis=1))
        history.append(host(state.params))
        emas.append(host(state.ema_params))
    expected = hand_ema(history, rate, rule)
    first, last = jax.tree.leaves(history[0]), jax.tree.leaves(history[-1])
    moved = max(np.abs(a - b).max() for a, b in zip(first, last, strict=True))
    assert moved > 1e-3  # the parameters really change, so a wrong rule shows
    for got, want in zip(emas, expected, strict=True):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            # float32 blends of O(1) weights: rounding is ~1e-7; a swapped decay moves them by
            # (1 - 2 d) |params_n - ema_{n-1}|, ~1e-3 here.
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
