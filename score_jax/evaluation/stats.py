"""Reference Inception statistics of a dataset (`score-jax fid-stats`) and reading them back.

A stats file is an .npz with pytorch-fid's `mu` [2048] and `sigma` [2048, 2048] (float64), so
published pytorch-fid files can be used directly, plus `pool_3` (float32 [n, 2048], a uniform
sample of at most metrics.KID_MAX_FEATURES pool3 features, for KID) and `num_images`. Images
are the training split as uint8, scaled by 1/255 without dequantization (the official rule).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from score_jax.data import get_dataset
from score_jax.evaluation import metrics
from score_jax.evaluation.features import FeatureExtractor, gather_hosts
from score_jax.evaluation.inception import NUM_FEATURES
from score_jax.evaluation.weights import cache_dir, load_inception_variables

STATS_COMMAND = "score-jax fid-stats --config CONFIG --out FILE"


def default_stats_path(config) -> Path:
    """config.eval.fid_stats, else a file named after the dataset in the score_jax cache."""
    if config.eval.get("fid_stats"):
        return Path(config.eval.fid_stats).expanduser()

    name = f"fid_stats_{config.data.dataset}_{config.data.image_size}"
    if config.data.get("path"):  # image folders and .npz files: one stats file per location
        name += "_" + hashlib.sha1(str(config.data.path).encode()).hexdigest()[:8]
    return cache_dir() / f"{name}.npz"


def load_stats(path: str | Path) -> dict[str, np.ndarray]:
    """{'mu', 'sigma'[, 'pool_3']} from a stats file, checked against the 2048-d pool3 space.

    Files with only `pool_3` (the official score_sde format) get mu and sigma computed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID statistics file {path} not found. Create it with `{STATS_COMMAND}` and pass "
            "it as --config.eval.fid_stats=FILE."
        )
    with np.load(path) as data:
        stats = {key: data[key] for key in ("mu", "sigma", "pool_3") if key in data.files}
    if "mu" not in stats and "pool_3" in stats:
        pool = stats["pool_3"].astype(np.float64)
        stats["mu"], stats["sigma"] = pool.mean(0), np.cov(pool, rowvar=False)
    if "mu" not in stats or "sigma" not in stats:
        raise ValueError(f"{path} has neither 'mu'/'sigma' nor 'pool_3' arrays.")
    expected = {"mu": (NUM_FEATURES,), "sigma": (NUM_FEATURES, NUM_FEATURES)}
    if "pool_3" in stats:
        expected["pool_3"] = (len(stats["pool_3"]), NUM_FEATURES)
    for key, shape in expected.items():
        if stats[key].shape != shape:
            raise ValueError(
                f"{path}: '{key}' has shape {stats[key].shape}, expected {shape} (statistics "
                "of the 2048-d pool3 features of the FID Inception). Was it made with another "
                f"network or layer? Recreate it with `{STATS_COMMAND}`."
            )
    return stats


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> Path:
    """np.savez to `path` exactly (no suffix added) via a temporary file and a rename, so a
    partial file never replaces a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


def save_stats(path: str | Path, accumulator, reservoir) -> Path:
    """Writes a stats file from a GaussianAccumulator and a FeatureReservoir."""
    mu, sigma = accumulator.mean_and_covariance()
    return save_npz_atomic(
        path, mu=mu, sigma=sigma, pool_3=reservoir.rows, num_images=np.asarray(accumulator.count)
    )


def compute_dataset_stats(config, out: str | Path) -> dict[str, np.ndarray]:
    """Inception mu/sigma (and KID features) of the full training split, written to `out`."""
    if config.data.dataset == "MIXTURE":
        raise ValueError("FID statistics need an image dataset; config.data.dataset is MIXTURE.")
    variables = load_inception_variables(config)
    batch_size = config.eval.batch_size
    extractor = FeatureExtractor(variables, batch_size)
    dataset = get_dataset(
        config, "train", batch_size=batch_size, shuffle=False, seed=0, num_epochs=1,
        drop_remainder=False,
    )  # fmt: skip
    accumulator, reservoir = metrics.GaussianAccumulator(), metrics.FeatureReservoir()
    for batch in tqdm(dataset, desc="fid-stats", unit="batch", disable=jax.process_index() > 0):
        images = np.asarray(batch["image"])
        if images.dtype != np.uint8:
            raise ValueError(f"fid-stats expects uint8 dataset images; got {images.dtype}.")
        pool3, _ = extractor(images.astype(np.float32) / 255.0)
        mask = np.asarray(batch.get("mask", np.ones(len(images), bool)))
        pool3 = gather_hosts(pool3)[gather_hosts(mask)]  # drop the rows padding the last batch
        accumulator = accumulator.update(pool3)
        reservoir = reservoir.update(pool3)
    if jax.process_index() == 0:
        save_stats(out, accumulator, reservoir)
        logging.info("Wrote Inception statistics of %d images to %s", accumulator.count, out)
    mu, sigma = accumulator.mean_and_covariance()
    return {"mu": mu, "sigma": sigma, "pool_3": reservoir.rows}
