"""Toy continuous data: 2-D (or any D) samples of a Gaussian mixture defined in the config.

The mixture is `score_jax.toy.GaussianMixture(config.data.mixture.{means, stds, weights})`, so
its exact score and density are known. The training set (`num_train` points) and the test set
(`num_test` points) are fixed draws with PRNG keys 0 and 1, independent of config.seed. The
"image" of this dataset is float32 [N, D] (not an image: samplers and likelihood take [B, D]);
every label is 0.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from score_jax.data.source import ArraySource, check_split
from score_jax.toy import GaussianMixture


def mixture_source(config, split: str) -> ArraySource:
    """'train' or 'test' points of the configured mixture: float32 [N, D]."""
    check_split(split, ("train", "test"), "MIXTURE")
    spec = config.data.mixture
    n = spec.num_train if split == "train" else spec.num_test
    if n <= 0:
        raise ValueError(f"config.data.mixture.num_{split} must be positive, got {n}.")
    spec_key = (_nested_tuple(spec.means), _nested_tuple(spec.stds), _nested_tuple(spec.weights))
    points = _draw(*spec_key, n, 0 if split == "train" else 1)
    return ArraySource(points, np.zeros(n, np.int32))


def _nested_tuple(value):
    if isinstance(value, list | tuple):
        return tuple(_nested_tuple(v) for v in value)
    return float(value)


@functools.lru_cache(maxsize=8)
def _draw(means, stds, weights, n: int, seed: int) -> np.ndarray:
    # Cached: the evaluation loop asks for the same fixed points again and again.
    mixture = GaussianMixture(np.asarray(means), np.asarray(stds), np.asarray(weights))
    # One compiled program instead of op-by-op dispatch (which compiles every op separately).
    points = np.asarray(jax.jit(mixture.sample, static_argnums=1)(jax.random.key(seed), n))
    points.setflags(write=False)
    return points
