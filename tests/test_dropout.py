"""models.dropout: the unrolled Threefry bits and the Dropout module equal JAX's and flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.models import dropout


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 4), (2, 8, 8, 16)])
@pytest.mark.parametrize("typed", [False, True])
def test_random_bits_equal_jax_random_bits(shape, typed):
    for seed in (0, 42, 2**31 + 5):
        key = jax.random.key(seed) if typed else jax.random.PRNGKey(seed)
        ours = jax.jit(dropout.random_bits, static_argnums=1)(key, shape)
        np.testing.assert_array_equal(ours, jax.random.bits(key, shape, jnp.uint32))


@pytest.mark.parametrize(
    "word, expected", [(0, (0x6B200159, 0x99BA4EFE)), (0xFFFFFFFF, (0x1CB996FC, 0xBB002BE7))]
)
def test_threefry2x32_known_answers(word, expected):
    """Threefry-2x32, 20 rounds: Random123's known-answer vectors (key = counter = all 0 / 1)."""
    w = jnp.uint32(word)
    assert tuple(int(v) for v in dropout.threefry2x32(w, w, w, w)) == expected


def test_other_key_types_fall_back_to_jax():
    key = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(
        dropout.bernoulli_mask(key, 0.9, (4, 5)), jax.random.bernoulli(key, 0.9, (4, 5))
    )


class TwoDropouts(nn.Module):
    """Two dropout layers in one scope, as in the residual blocks: checks the rng stream."""

    cls: type
    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        h = self.cls(self.rate, deterministic=not train)(x)
        return self.cls(self.rate, deterministic=not train)(h * 2.0)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.0, 1.0])
def test_dropout_equals_flax_bit_for_bit(rate):
    """The 'cpu' kernels' Dropout draws nn.Dropout's masks (the 'xla' kernels' dropout)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 32))
    rngs = {"dropout": jax.random.PRNGKey(7)}
    layer = dropout.Dropout
    ours = TwoDropouts(layer, rate).apply({}, x, True, rngs=rngs)
    ref = TwoDropouts(nn.Dropout, rate).apply({}, x, True, rngs=rngs)
    np.testing.assert_array_equal(ours, ref)
    if 0.0 < rate < 1.0:
        kept = float(jnp.mean(ours != 0))  # both layers: (1 - rate)^2 of 8192 values kept
        se = np.sqrt((1 - rate) ** 2 * (1 - (1 - rate) ** 2) / x.size)
        assert abs(kept - (1 - rate) ** 2) < 4 * se
    np.testing.assert_array_equal(TwoDropouts(layer, rate).apply({}, x, False), 2 * x)


def test_dropout_gradient_is_the_mask_over_keep_prob():
    x = jnp.ones((64, 64))
    rngs = {"dropout": jax.random.PRNGKey(1)}
    layer = dropout.Dropout(0.25, deterministic=False)
    grad = jax.grad(lambda v: jnp.sum(layer.apply({}, v, rngs=rngs)))(x)
    out = layer.apply({}, x, rngs=rngs)
    np.testing.assert_array_equal(grad, out)  # d(sum)/dx = mask / 0.75 = out at x = 1
    assert set(np.unique(np.asarray(grad)).tolist()) == {0.0, np.float32(1 / 0.75)}


def test_non_partitionable_threefry_falls_back_to_jax():
    """With the legacy counter scheme the bits differ, so the module must defer to JAX."""
    key = jax.random.PRNGKey(11)
    assert jax.config.jax_threefry_partitionable  # JAX's default, which the module mirrors
    jax.config.update("jax_threefry_partitionable", False)
    try:
        legacy = jax.random.bits(key, (3, 7), jnp.uint32)
        np.testing.assert_array_equal(dropout.random_bits(key, (3, 7)), legacy)
    finally:
        jax.config.update("jax_threefry_partitionable", True)
    assert not np.array_equal(legacy, jax.random.bits(key, (3, 7), jnp.uint32))


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 4, 4, 32), (1,), (33,)])
def test_pack_bits_round_trip(shape):
    """Every element comes back, also where the size is not a multiple of the 32-bit word."""
    mask = jax.random.bernoulli(jax.random.PRNGKey(3), 0.5, shape)
    words = dropout.pack_bits(mask)
    assert words.shape == (-(-mask.size // 32),)
    np.testing.assert_array_equal(dropout.unpack_bits(words, shape), mask)
    flat = np.asarray(mask).reshape(-1)  # bit i % 32 of word i // 32
    np.testing.assert_array_equal(
        [(int(words[i // 32]) >> (i % 32)) & 1 for i in range(flat.size)], flat
    )


def test_training_gradient_computes_the_hash_once():
    """Dropout between an activation and a convolution, differentiated: the mask's Threefry hash
    (20 rotations, one shift-left each) appears once in the optimised program, not once per
    consumer of the mask (the convolution, its kernel gradient, the activation's gradient)."""
    conv = nn.Conv(8, (3, 3))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8))
    params = conv.init(jax.random.PRNGKey(1), x)

    def loss(params, x):
        h = dropout.Dropout(0.1, deterministic=False).apply(
            {}, nn.silu(x), rngs={"dropout": jax.random.PRNGKey(2)}
        )
        return jnp.sum(conv.apply(params, h) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text()
    assert hlo.count("shift-left(") // 20 == 1
