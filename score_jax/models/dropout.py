"""Dropout whose random bits XLA can fuse: the same masks as flax's nn.Dropout, ~4x faster on CPU.

`jax.random` lowers its Threefry-2x32 hash on CPU as a rolled loop of five iterations, so each
of the hash's 80 integer operations is a separate pass over the whole mask (5.3 ms for a
16x32x32x128 mask). Written out unrolled, the hash fuses into one elementwise kernel (1.4 ms),
which takes dropout from ~7% to ~2% of a training step of the small CIFAR-10 configs.

A fused hash has a cost of its own: XLA fuses an elementwise chain into each of its consumers,
and a mask has many in a training step (the dropout itself, the next convolution's kernel
gradient, the norm and activation gradients before it), so the ~100 integer operations per
element ran 2-6 times per layer, some in transposing copies that do not vectorise. `Dropout`
therefore stores its mask as one bit per element (`pack_bits`): the packing is a reduction,
which XLA never fuses into a consumer, so the hash runs once and consumers only shift a word
(config P's gradient, 28 dropout layers: 450 vs 510 ms, interleaved).

`random_bits` reproduces `jax.random.bits(key, shape, uint32)` exactly for Threefry keys under
JAX's default partitionable counter scheme (each element hashes its own linear index), so
`Dropout` draws bit-for-bit the masks `nn.Dropout` draws from the same key; for any other key
type or setting it falls back to `jax.random.bernoulli`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Threefry-2x32 rotation constants (Salmon et al. 2011), four rounds each, used alternately.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(v: jax.Array, r: int) -> jax.Array:
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(
    k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The 20-round Threefry-2x32 hash of counter words (x1, x2) under key (k1, k2), unrolled."""
    keys = (k1, k2, k1 ^ k2 ^ _KEY_PARITY)
    x1, x2 = x1 + keys[0], x2 + keys[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, r) ^ x1
        x1 = x1 + keys[(i + 1) % 3]
        x2 = x2 + keys[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _threefry_key_words(key: jax.Array) -> jax.Array | None:
    """The key's two uint32 words, or None when it is not a Threefry key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) != "threefry2x32":
            return None
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        return None
    return key


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random bits of `shape`, equal to jax.random.bits(key, shape, jnp.uint32)."""
    words = _threefry_key_words(key)
    size = math.prod(shape)
    partitionable = getattr(jax.config, "jax_threefry_partitionable", True)
    if words is None or size >= 2**32 or not partitionable:
        return jax.random.bits(key, shape, jnp.uint32)
    # Element i hashes the 64-bit counter (0, i); the two output words are xor-ed.
    low = lax.iota(jnp.uint32, size).reshape(shape)
    a, b = threefry2x32(words[0], words[1], jnp.zeros_like(low), low)
    return a ^ b


def bernoulli_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """bool mask, True with probability keep_prob; equal to jax.random.bernoulli(key, p, shape)."""
    # jax.random.uniform's construction: 23 random mantissa bits give a float32 in [1, 2), minus 1.
    mantissa = (random_bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000)
    uniform = lax.bitcast_convert_type(mantissa, jnp.float32) - jnp.float32(1.0)
    return uniform < jnp.float32(keep_prob)


def pack_bits(mask: jax.Array) -> jax.Array:
    """bool mask -> uint32 [ceil(size / 32)], flat element i in bit i % 32 of word i // 32."""
    size = mask.size
    flat = jnp.pad(mask.reshape(-1), (0, -size % 32)).reshape(-1, 32).astype(jnp.uint32)
    return lax.reduce(flat << lax.iota(jnp.uint32, 32), np.uint32(0), lax.bitwise_or, (1,))


def unpack_bits(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The bool mask of `shape` that `pack_bits` packed into `words`."""
    bits = (words[:, None] >> lax.iota(jnp.uint32, 32)[None, :]) & np.uint32(1)
    return (bits.reshape(-1)[: math.prod(shape)] == 1).reshape(shape)


class Dropout(nn.Module):
    """nn.Dropout(rate): zeroes inputs with probability `rate` and scales the rest by
    1 / (1 - rate) unless deterministic, drawing the mask with the fused hash above. The 'cpu'
    kernels' dropout (models/kernels.py); the 'xla' ones use nn.Dropout, whose masks are these."""

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep_prob = 1.0 - self.rate
        key = self.make_rng(self.rng_collection)
        # Stored as bits, so that XLA computes the hash once (module docstring).
        mask = unpack_bits(pack_bits(bernoulli_mask(key, keep_prob, inputs.shape)), inputs.shape)
        return lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
