"""Bits/dim on the data's own quantization grid: a dataset's levels (17 for the digits, 256 for
8-bit data) set the dequantization (k + u) / L and the offset, checked against a hand computation.

The model is a Gaussian N(m, s^2) per value on centred data x = 2 v / L - 1, v = k + u the
dequantized level; its exact perturbed score replaces a network. In level units v that density is
N(L (1 + m) / 2, (L s / 2)^2), so a code built from it spends -log2 of that density per value: no
offset appears in the hand computation, which is what the offset must reproduce.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import parallel, score_model
from score_jax.config import load_config
from score_jax.data import get_source, quantization_levels, to_float
from score_jax.evaluation.bpd import bpd_from_config, dataset_bpd, make_bpd_step
from score_jax.likelihood import bpd_offset, dequantize
from score_jax.sde import VPSDE
from score_jax.toy import GaussianMixture

SDE = VPSDE(0.1, 20.0)
MEAN, STD = 0.05, 0.3  # of the model on centred data in [-1, 1]
NUM, DIM = 16, 3


def _gaussian(dim: int) -> GaussianMixture:
    return GaussianMixture(jnp.full((1, dim), MEAN), jnp.array([STD]), jnp.ones(1))


def _stored(levels_k: np.ndarray, levels: int) -> np.ndarray:
    """Levels k -> the uint8 a dataset of `levels` levels stores (spread evenly over 0..255)."""
    return np.round(levels_k * (255 / (levels - 1))).astype(np.uint8)


def _hand_bpd(k: np.ndarray, unit: np.ndarray, levels: int) -> np.ndarray:
    """-log2 N(v; L (1 + MEAN) / 2, (L STD / 2)^2) per value in level units v = k + u, per row."""
    v = np.asarray(unit, np.float64).reshape(len(k), -1) * levels
    u = v - k.reshape(len(k), -1)
    # Dequantization must fill [k, k + 1) of the level grid: the bin of level k.
    assert (u >= 0).all() and (u < 1).all()
    mean, std = levels * (1 + MEAN) / 2, levels * STD / 2
    nats = 0.5 * ((v - mean) / std) ** 2 + math.log(std * math.sqrt(2 * math.pi))
    return (nats / math.log(2)).mean(axis=1)


@pytest.mark.parametrize("levels", [17, 256])
def test_known_density_bits_per_dim_on_its_own_grid(levels):
    rng = np.random.default_rng(levels)
    # Data drawn from the model's own discretised density on the grid of `levels`.
    values = rng.normal(levels * (1 + MEAN) / 2, levels * STD / 2, (NUM, 1, 1, DIM))
    k = np.clip(np.floor(values), 0, levels - 1)
    images = _stored(k, levels)
    mesh = parallel.make_mesh()
    step = make_bpd_step(
        lambda params: _gaussian(DIM).score_fn(SDE),
        SDE,
        mesh,
        scaler=lambda x: 2 * x - 1,
        offset=bpd_offset(lambda x: (x + 1) / 2, levels),
        hutchinson="exact",
        levels=levels,
    )
    key = jax.random.key(5)
    batches = [{"image": images[:8]}, {"image": images[8:]}]
    result = dataset_bpd(step, {}, batches, mesh, key=key, repeats=1, progress=False)
    # dataset_bpd's noise: example i of pass 0 uses fold_in(fold_in(split(key)[0], 0), i).
    unit = dequantize(jax.random.split(key)[0], jnp.asarray(images), jnp.arange(NUM), 0, levels)
    expected = _hand_bpd(k, unit, levels)
    # Exact trace at rtol = atol = 1e-5: < 2e-3 nats over D = 3 values, < 1e-3 bits/dim; the
    # t = 1e-5 end time and the VP prior mismatch add < 1e-4. An offset on the wrong grid
    # (8 - 1 = 7 bits for 17-level data instead of log2(17) - 1 = 3.09) is 3.9 bits/dim off.
    assert result["bpd"] == pytest.approx(expected.mean(), abs=1e-3)
    # About the entropy of the discretised Gaussian: log2(L STD / 2 sqrt(2 pi e)) + 0 offset.
    assert abs(result["bpd"] - math.log2(levels * STD / 2 * math.sqrt(2 * math.pi * math.e))) < 1


def test_eight_bit_levels_keep_the_official_rule_bit_for_bit():
    x = jnp.arange(256, dtype=jnp.uint8).reshape(16, 16)
    key = jax.random.key(0)
    u = jax.random.uniform(key, x.shape, jnp.float32)
    old = (x.astype(jnp.float32) + u) / 256.0
    np.testing.assert_array_equal(np.asarray(to_float(x, key, True)), np.asarray(old))
    np.testing.assert_array_equal(np.asarray(to_float(x, key, True, 256)), np.asarray(old))
    plain = x.astype(jnp.float32) / 255.0  # the former rule, as JAX computes it
    np.testing.assert_array_equal(np.asarray(to_float(x)), np.asarray(plain))
    assert bpd_offset(lambda v: (v + 1) / 2, 256) == 7.0
    assert bpd_offset(lambda v: v, 256) == 8.0
    assert bpd_offset(lambda v: (v + 1) / 2, 17) == pytest.approx(math.log2(17) - 1)


def test_digits_declare_seventeen_levels_and_decode_them():
    from sklearn.datasets import load_digits

    config = load_config("configs/digits/vp_ddpmpp.py")
    assert quantization_levels(config) == 17
    resized = load_config("configs/digits/vp_ddpmpp.py", ["data.image_size=16"])
    assert quantization_levels(resized) == 256  # bilinear resizing leaves the 17-level grid
    assert quantization_levels(load_config("configs/vp/cifar10_ddpmpp_continuous.py")) == 256
    assert quantization_levels(load_config("configs/toy/mixture_vp.py")) is None

    images = get_source(config, "train").read(np.arange(1500))["image"]
    assert len(np.unique(images)) == 17
    # to_float recovers the raw 0..16 values: k / 16 without dequantization.
    raw = set(np.unique(load_digits().images).tolist())
    k = np.asarray(to_float(jnp.asarray(images), levels=17)) * 16
    np.testing.assert_allclose(k, np.round(k), atol=1e-5)
    assert set(np.unique(np.round(k)).tolist()) == raw


def test_digits_bits_per_dim_from_config_use_seventeen_levels(monkeypatch):
    """bpd_from_config (the path of `score-jax likelihood`, `eval` and the final report)."""
    config = load_config("configs/digits/vp_ddpmpp.py", ["eval.bpd_hutchinson=exact"])
    dim = 64

    def exact_score_fn(sde, model, variables, train=False, continuous=True):
        flat = _gaussian(dim).score_fn(sde)
        return lambda x, t: flat(x.reshape(x.shape[0], dim), t).reshape(x.shape)

    monkeypatch.setattr(score_model, "get_score_fn", exact_score_fn)
    config.eval.batch_size = 297
    result = bpd_from_config(config, {}, "test", progress=False)
    assert result["levels"] == 17
    images = get_source(config, "test").read(np.arange(297))["image"]
    k = np.round(images.astype(np.float64) * 16 / 255)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 2), 0)  # its key at step 0
    unit = dequantize(jax.random.split(key)[0], jnp.asarray(images), jnp.arange(297), 0, 17)
    expected = _hand_bpd(k, unit, 17)
    # Exact trace over D = 64 values at rtol = atol = 1e-5: well under 1e-3 bits/dim.
    assert result["bpd"] == pytest.approx(expected.mean(), abs=1e-3)
