"""Samples from a checkpoint's EMA weights (`score-jax sample`), sharded over every device.

`make_batch_sampler` builds one jitted program that draws a global batch with the config's
sampler, sharded over the mesh; `sample_to_file` runs it for N samples and writes them as
uint8 .npz plus a PNG grid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from score_jax import parallel
from score_jax.checkpoints import restore_for_inference
from score_jax.evaluation.stats import save_npz_atomic
from score_jax.images import save_samples_png
from score_jax.score_model import SampleFn, build_score_model, make_sample_fn

GRID_SAMPLES = 64


def make_batch_sampler(config, batch_size: int, mesh: jax.sharding.Mesh) -> SampleFn:
    """jit(params (replicated), key) -> (samples [batch_size, H, W, C] in [0, 1], nfe), the
    batch sharded over the mesh (`score_model.make_sample_fn`)."""
    return make_sample_fn(config, build_score_model(config), batch_size, mesh)


def to_uint8(samples: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 by clip(x * 255) and truncation, as the official evaluation."""
    return np.clip(np.asarray(samples) * 255.0, 0, 255).astype(np.uint8)


def host_samples(samples: jax.Array) -> np.ndarray:
    """The full global batch on every host, as numpy."""
    if jax.process_count() == 1:
        return np.asarray(samples)
    return np.asarray(multihost_utils.process_allgather(samples, tiled=True))


def place_params(params: Any, mesh: jax.sharding.Mesh) -> Any:
    """Restored parameters, replicated over the mesh."""
    return jax.device_put(params, parallel.replicated(mesh))


def save_grid(images_uint8: np.ndarray, path: str | Path) -> Path:
    """The first GRID_SAMPLES images as one PNG grid."""
    pictures = images_uint8[:GRID_SAMPLES].astype(np.float32) / 255.0
    upscale = max(1, 64 // pictures.shape[1])
    return save_samples_png(pictures, path, upscale)


def sample_paths(out: str | Path) -> tuple[Path, Path]:
    """(.npz path, .png grid path) for `--out`: 'x.npz' or 'x.png' names both x.npz and x.png."""
    out = Path(out)
    if out.suffix not in (".npz", ".png"):
        raise ValueError(f"--out {out}: name an .npz (the samples) or a .png (the grid) file.")
    return out.with_suffix(".npz"), out.with_suffix(".png")


def sampling_batch_size(config, num: int, n_devices: int) -> int:
    """Per-round batch: eval.batch_size, but no more than `num` needs, rounded up to a multiple
    of the device count (so any batch size and any number of devices work)."""
    wanted = min(int(config.eval.batch_size), num)
    return -(-wanted // n_devices) * n_devices


def sample_to_file(config, workdir: str | Path, num: int, out: str | Path, step=None) -> Path:
    """Draws `num` samples from the checkpoint at `step` (default: latest); returns the .npz.

    The .npz (`sample_paths(out)`) holds 'samples' uint8 [num, H, W, C]; a PNG grid goes beside
    it. Rounds of `sampling_batch_size` samples are drawn until `num` are there.
    """
    if num < 1:
        raise ValueError(f"--num must be positive, got {num}.")
    if config.data.dataset == "MIXTURE":
        raise ValueError("score-jax sample writes images; config.data.dataset is MIXTURE.")
    npz_path, png_path = sample_paths(out)
    step, params = restore_for_inference(workdir, config, step)
    mesh = parallel.make_mesh()
    batch_size = sampling_batch_size(config, num, mesh.devices.size)
    sample = make_batch_sampler(config, batch_size, mesh)
    params = place_params(params, mesh)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
    rounds = -(-num // batch_size)
    batches = []
    for r in tqdm(range(rounds), desc="sample", unit="batch", disable=jax.process_index() > 0):
        x, _ = sample(params, jax.random.fold_in(key, r))
        batches.append(to_uint8(host_samples(x)))
    images = np.concatenate(batches)[:num]
    if jax.process_index() == 0:
        save_npz_atomic(npz_path, samples=images)
        grid = save_grid(images, png_path)
        logging.info("Wrote %d samples of step %d to %s (grid: %s)", num, step, npz_path, grid)
    return npz_path
