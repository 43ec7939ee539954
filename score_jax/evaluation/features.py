"""Inception features of image batches: checked on the host, computed jitted over the mesh.

`FeatureExtractor(variables)(images)` maps float images [B, H, W, C] in [0, 1] (C = 1 or 3) to
numpy (pool3 [B, 2048], logits [B, 1008]). Batches of any size are cut into chunks of one fixed
size, sharded over the mesh axis "data", so the network compiles exactly once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from score_jax import parallel
from score_jax.evaluation.inception import FIDInception

# Images per device in one compiled call; bounds activation memory (~0.1 GB per image at 299).
MAX_IMAGES_PER_DEVICE = 64
# Float images may overshoot [0, 1] by rounding only.
RANGE_SLACK = 1e-6


def check_images(images: Any) -> np.ndarray:
    """images as float32 [B, H, W, C] in [0, 1] with C in (1, 3), or a ValueError saying why."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        hint = " (divide uint8 images by 255)" if images.dtype == np.uint8 else ""
        raise ValueError(
            f"Inception features need float images in [0, 1]; got dtype {images.dtype}{hint}."
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"Inception features need images [B, H, W, C] with C = 1 or 3; got {images.shape}."
        )
    lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK or not np.isfinite(lo + hi):
        raise ValueError(
            f"Inception features need images in [0, 1]; found values in [{lo:.4g}, {hi:.4g}]"
            " (images in [-1, 1] need the inverse scaler first)."
        )
    return images.astype(np.float32)


def _features(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    if images.shape[-1] == 1:  # grayscale: the same image in R, G and B
        images = jnp.repeat(images, 3, axis=-1)
    return FIDInception().apply(variables, images)


# Module level, so every FeatureExtractor of the process shares one compiled program.
_features_jit = jax.jit(_features)


class FeatureExtractor:
    """Sharded, jitted FIDInception with a fixed chunk of `chunk_size` images per call."""

    def __init__(self, variables: Any, batch_size: int, mesh: jax.sharding.Mesh | None = None):
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        devices = self.mesh.devices.size
        per_device = min(-(-batch_size // devices), MAX_IMAGES_PER_DEVICE)
        self.chunk_size = per_device * devices
        self.variables = parallel.replicate(variables, self.mesh)

    def __call__(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """images [B, H, W, C] float in [0, 1] (this host's rows) -> (pool3, logits), numpy.

        On several hosts every host must pass the same number of rows.
        """
        images = check_images(images)
        pools, logits = [], []
        local_chunk = self.chunk_size // jax.process_count()
        for start in range(0, len(images), local_chunk):
            chunk = images[start : start + local_chunk]
            rows = len(chunk)
            if rows < local_chunk:
                pad = np.zeros((local_chunk - rows, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            batch = parallel.host_batch_to_global(chunk, self.mesh)
            pool, logit = _features_jit(self.variables, batch)
            first = jax.process_index() * local_chunk  # this host's rows of the global batch
            pools.append(gather_hosts(pool)[first : first + rows])
            logits.append(gather_hosts(logit)[first : first + rows])
        return np.concatenate(pools), np.concatenate(logits)


def gather_hosts(array) -> np.ndarray:
    """A global (or host-local) array as numpy, every host's rows in process order."""
    if jax.process_count() == 1:
        return np.asarray(array)

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
