"""Classical bits/dim baselines, scored on the same test examples and noise as the score model.

Fitted on the training split, scored on the test split, in bits per dimension of the data's own
quantization (`score_jax.data.quantization_levels`, L levels):

- full-covariance Gaussian (maximum likelihood);
- the best of a few full-covariance Gaussian mixtures (FULL_COMPONENTS) and of a few diagonal
  ones (DIAG_COMPONENTS), scikit-learn EM from a fixed seed;
- an independent per-pixel categorical over the L levels, add-one (Laplace) smoothed.

The density baselines work in level units v = k + u, where a density's -log2 p(v) / D is the
bits/dim with no offset (the same number `bpd_offset` gives on the model's scaled data). The
dequantization noise u of test example i in pass r is the model's own (`bpd.bpd_key`), so model
and baselines see the very same points; the fits pool FIT_PASSES passes of the training split.
The categorical's P(k) is discrete and needs no noise. "Best" mixture means best on the test
split itself, which favours the baselines. Continuous data (MIXTURE) get the density baselines
on the raw points; datasets with more than MAX_DIM values per example or MAX_TRAIN_VALUES
training values are skipped with the reason (a full covariance of CIFAR-10 is 3072^2 and EM on
50000 such images takes minutes, not the seconds this report may spend).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.mixture import GaussianMixture

from score_jax.data import get_source, quantization_levels, to_float
from score_jax.likelihood import dequantize

MAX_DIM = 1024
MAX_TRAIN_VALUES = 4_000_000
FIT_PASSES = 2
FULL_COMPONENTS = (5, 10)
DIAG_COMPONENTS = (50, 100)


@dataclasses.dataclass(frozen=True)
class BaselineData:
    """Training points [N * FIT_PASSES, D], test points per pass [R, M, D] (level units, or raw
    points when levels is None) and the test levels k [M, D] (int, None for continuous data)."""

    train: np.ndarray
    test: np.ndarray
    train_levels: np.ndarray | None
    test_levels: np.ndarray | None
    levels: int | None


def _split_arrays(config, split: str) -> np.ndarray:
    source = get_source(config, split)
    return source.read(np.arange(len(source)))["image"]


def _level_units(key, images: np.ndarray, repeat: int, levels: int) -> np.ndarray:
    """[N, D] float64 v = k + u of the dequantization pass `repeat` (the model's rule)."""
    unit = dequantize(key, jnp.asarray(images), jnp.arange(len(images)), repeat, levels)
    return np.asarray(unit, np.float64).reshape(len(images), -1) * levels


def _levels_of(images: np.ndarray, levels: int) -> np.ndarray:
    """[N, D] int levels k of uint8 images, by to_float's own rule (k / (levels - 1) back to k)."""
    unit = np.asarray(to_float(jnp.asarray(images), levels=levels), np.float64)
    return np.round(unit.reshape(len(images), -1) * (levels - 1)).astype(np.int64)


def baseline_data(config, key: jax.Array) -> BaselineData:
    """The points every baseline is fitted on and scored on; `key` is the model's bits/dim key
    (`bpd.bpd_key`), whose first half dequantizes the test split."""
    levels = quantization_levels(config)
    train, test = _split_arrays(config, "train"), _split_arrays(config, "test")
    repeats = int(config.eval.bpd_repeats)
    if levels is None:
        flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)  # noqa: E731
        return BaselineData(flat(train), flat(test)[None].repeat(repeats, 0), None, None, None)
    test_key = jax.random.split(key)[0]
    fit_key = jax.random.PRNGKey(config.seed + 4)
    fit = np.concatenate([_level_units(fit_key, train, r, levels) for r in range(FIT_PASSES)])
    tests = np.stack([_level_units(test_key, test, r, levels) for r in range(repeats)])
    return BaselineData(fit, tests, _levels_of(train, levels), _levels_of(test, levels), levels)


def mixture_bits(data: BaselineData, components: int, covariance: str) -> np.ndarray:
    """Bits/dim [R * M] of a `covariance` ('full' | 'diag') Gaussian mixture fitted by EM."""
    # reg_covar 1e-6 in level units: far below the 1/12 variance dequantization gives each value.
    model = GaussianMixture(components, covariance_type=covariance, random_state=0, max_iter=200)
    model.fit(data.train)
    dim = data.train.shape[1]
    nats = np.concatenate([model.score_samples(points) for points in data.test])
    return -nats / math.log(2.0) / dim


def categorical_bits(data: BaselineData, alpha: float = 1.0) -> np.ndarray:
    """Bits/dim [R * M] of independent per-pixel categoricals over the levels, add-alpha."""
    levels, train, test = data.levels, data.train_levels, data.test_levels
    dim = train.shape[1]
    counts = np.stack([np.bincount(train[:, j], minlength=levels) for j in range(dim)])
    log_p = np.log2((counts + alpha) / (len(train) + alpha * levels))  # [D, L]
    bits = -log_p[np.arange(dim), test].mean(axis=1)
    return np.tile(bits, len(data.test))  # the same for every dequantization pass


def _summary(bits: np.ndarray, name: str, seconds: float) -> dict:
    return {
        "name": name,
        "bpd": float(bits.mean()),
        "bpd_stderr": float(bits.std(ddof=1) / math.sqrt(bits.size)),
        "seconds": round(seconds, 2),
    }


def _best(data: BaselineData, covariance: str, options: tuple[int, ...], label: str) -> dict | None:
    """The mixture with the best test bits/dim among `options` components (EM needs at least
    as many training examples as components; None when no option fits)."""
    options = tuple(k for k in options if k <= len(data.train))
    if not options:
        return None
    tic = time.perf_counter()
    results = {k: mixture_bits(data, k, covariance) for k in options}
    best = min(results, key=lambda k: results[k].mean())
    name = f"{label}, best of {'/'.join(map(str, options))} ({best} components)"
    return _summary(results[best], name, time.perf_counter() - tic)


def skip_reason(config) -> str | None:
    """Why the baselines are not computed for config's data (None: they are)."""
    dim = config.data.image_size**2 * config.data.num_channels
    if config.data.dataset == "MIXTURE":
        dim = len(config.data.mixture.means[0])
    if dim > MAX_DIM:
        return f"{dim} values per example (the baselines run up to {MAX_DIM})"
    values = len(get_source(config, "train")) * dim
    if values > MAX_TRAIN_VALUES:
        return f"{values} training values (the baselines run up to {MAX_TRAIN_VALUES})"
    return None


def baselines_bpd(config, key: jax.Array) -> dict:
    """{"levels", "baselines": [{"name", "bpd", "bpd_stderr", "seconds"}, ...]} or {"skipped"}.

    `key` is the model's bits/dim key (`bpd.bpd_key(config, step)`), so that the test points
    and their noise are the model's.
    """
    reason = skip_reason(config)
    if reason is not None:
        return {"skipped": reason}
    data = baseline_data(config, key)
    tic = time.perf_counter()
    rows = [_summary(mixture_bits(data, 1, "full"), "full-covariance Gaussian", 0.0)]
    rows[0]["seconds"] = round(time.perf_counter() - tic, 2)
    mixtures = (_best(data, "full", FULL_COMPONENTS, "full-covariance GMM"),
                _best(data, "diag", DIAG_COMPONENTS, "diagonal GMM"))  # fmt: skip
    rows.extend(row for row in mixtures if row is not None)
    if data.levels is not None:
        tic = time.perf_counter()
        rows.append(
            _summary(categorical_bits(data), "per-pixel categorical", time.perf_counter() - tic)
        )
    return {"levels": data.levels, "baselines": rows}


def format_baselines(result: dict, model_bpd: float | None = None) -> list[str]:
    """Report lines: one per baseline (with whether the model beats it), or why none ran."""
    if "skipped" in result:
        return [f"  baselines skipped: {result['skipped']}"]
    lines = []
    for row in result["baselines"]:
        verdict = ""
        if model_bpd is not None:
            verdict = " (model beats it)" if model_bpd < row["bpd"] else " (model does NOT beat it)"
        lines.append(
            f"  {row['name'] + ':':<50} {row['bpd']:.3f} +- {row['bpd_stderr']:.3f}{verdict}"
        )
    return lines
