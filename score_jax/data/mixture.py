"""Toy continuous data: 2-D (or any D) samples of a Gaussian mixture defined in the config.

The mixture is `score_jax.toy.GaussianMixture(config.data.mixture.{means, stds, weights})`, so
its exact score and density are known. The training set (`num_train` points) and the test set
(`num_test` points) are fixed draws with PRNG keys 0 and 1, independent of config.seed. The
"image" of this dataset is float32 [N, D] (not an image: samplers and likelihood take [B, D]);
every label is 0.
"""

from __future__ import annotations

import jax
import numpy as np

from score_jax.data.source import ArraySource, check_split
from score_jax.toy import GaussianMixture


def get_mixture(config) -> GaussianMixture:
    """The data distribution of the MIXTURE dataset."""
    spec = config.data.mixture
    return GaussianMixture(np.asarray(spec.means), np.asarray(spec.stds), np.asarray(spec.weights))


def mixture_source(config, split: str) -> ArraySource:
    """'train' or 'test' points of the configured mixture: float32 [N, D]."""
    check_split(split, ("train", "test"), "MIXTURE")
    spec = config.data.mixture
    n = spec.num_train if split == "train" else spec.num_test
    if n <= 0:
        raise ValueError(f"config.data.mixture.num_{split} must be positive, got {n}.")
    key = jax.random.key(0 if split == "train" else 1)
    points = np.asarray(get_mixture(config).sample(key, n), np.float32)
    return ArraySource(points, np.zeros(n, np.int32))
