"""Sample pictures during training: the configured sampler on the EMA parameters.

The sampler comes from `score_jax.sampling.get_sampler` and is built before training starts;
a sampler that cannot be built is an error (set training.snapshot_sampling=False to train
without pictures). Sampling runs on process 0's first device only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import ml_collections
import numpy as np

from score_jax.images import save_samples_png
from score_jax.score_model import ScoreModel, make_sample_fn

log = logging.getLogger(__name__)
NUM_SNAPSHOT_SAMPLES = 64


def make_snapshot_sampler(config: ml_collections.ConfigDict, score_model: ScoreModel):
    """fn(ema_params, step, workdir) writing <workdir>/samples/step_<step>.png, or None."""
    if jax.process_index() != 0:
        return None
    # Built before the first step, so a bad sampling config fails the run at once instead of
    # training for hours without the pictures it asked for.
    sample = make_sample_fn(config, score_model, NUM_SNAPSHOT_SAMPLES)
    key = jax.random.PRNGKey(config.seed + 3)

    def snapshot(ema_params, step: int, workdir: str | Path) -> Path:
        local = jax.tree.map(lambda x: x.addressable_data(0), ema_params)
        x, _ = sample(local, jax.random.fold_in(key, step))
        x = np.asarray(x)
        pictures = x if x.ndim == 2 else np.clip(x, 0.0, 1.0)
        upscale = max(1, 64 // pictures.shape[1]) if pictures.ndim == 4 else 1
        path = save_samples_png(pictures, Path(workdir) / "samples" / f"step_{step}.png", upscale)
        log.info("Samples at step %d: %s", step, path)
        return path

    return snapshot
