"""A full-covariance Gaussian baseline for bits/dim, computed the way the score model's is.

The Gaussian is fitted (maximum likelihood) to the training images after the same uniform
dequantization x = (k + u) / L on the data's L levels and the same scaler as the model's
evaluation; its bits/dim on the test split uses the same dequantization rule, the same number
of noise passes and the same offset (`score_jax.likelihood.bpd_offset`). Meant for small
in-memory datasets (digits).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from score_jax.data import get_inverse_scaler, get_scaler, get_source, quantization_levels
from score_jax.likelihood import bits_per_dim, bpd_offset, dequantize


def _dequantized(config, split: str, key: jax.Array, repeat: int) -> np.ndarray:
    """[N, D] float64: the split's images dequantized (pass `repeat`), scaled, flattened."""
    source = get_source(config, split)
    images = source.read(np.arange(len(source)))["image"]
    if images.dtype != np.uint8:
        raise ValueError(
            f"The Gaussian bits/dim baseline needs 8-bit images; {config.data.dataset} gives "
            f"{images.dtype}."
        )
    x = dequantize(key, images, np.arange(len(images)), repeat, quantization_levels(config))
    x = get_scaler(config)(x)
    return np.asarray(x, np.float64).reshape(len(images), -1)


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) in nats for rows x [N, D]."""
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (x - mean).T).T
    log_det = 2.0 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (np.sum(z**2, axis=1) + log_det + x.shape[1] * np.log(2.0 * np.pi))


def gaussian_baseline_bpd(config: ml_collections.ConfigDict, repeats: int | None = None) -> dict:
    """{"bpd", "bpd_stderr", "train_examples", "test_examples"} of the Gaussian baseline.

    The fit pools `repeats` dequantization passes of the training split (default
    config.eval.bpd_repeats); the test bits/dim averages the same number of passes.
    """
    repeats = int(config.eval.bpd_repeats if repeats is None else repeats)
    key = jax.random.PRNGKey(config.seed + 4)
    fit_key, test_key = jax.random.split(key)
    train = np.concatenate([_dequantized(config, "train", fit_key, r) for r in range(repeats)])
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, bias=True)
    offset = bpd_offset(get_inverse_scaler(config), quantization_levels(config))
    values = []
    for r in range(repeats):
        test = _dequantized(config, "test", test_key, r)
        logp = gaussian_log_density(test, mean, cov)
        values.append(np.asarray(bits_per_dim(logp, test.shape, offset), np.float64))
    values = np.concatenate(values)
    return {
        "bpd": float(values.mean()),
        "bpd_stderr": float(values.std(ddof=1) / np.sqrt(len(values))),
        "train_examples": len(train) // repeats,
        "test_examples": len(values) // repeats,
        "repeats": repeats,
    }
