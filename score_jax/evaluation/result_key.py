"""Keys for saved evaluation results: everything a number depends on, digested.

Per-batch bits/dim, eval losses and reports are saved so that a restarted command skips the
work already done. A saved number may be reused only by a command that would compute the same
number: the same model, SDE, data, evaluation settings and seed, the same checkpoint step and
the same parameters. `result_key` digests all of those, and saved results live under it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np

from score_jax import parallel
from score_jax.run_record import SDE_TRAINING_KEYS

# Which checkpoints an eval covers does not change any one checkpoint's results.
_EVAL_RANGE_KEYS = ("begin_ckpt", "end_ckpt")


def config_for_results(config) -> dict[str, Any]:
    """The config sections a saved evaluation result depends on, as plain JSON-able values."""
    training = config.training
    return {
        "model": config.model.to_dict(),
        "data": config.data.to_dict(),
        "eval": {k: v for k, v in config.eval.to_dict().items() if k not in _EVAL_RANGE_KEYS},
        "training": {k: training.get(k) for k in SDE_TRAINING_KEYS},
        "seed": config.get("seed"),
    }


def params_digest(params: Any) -> str:
    """sha256 of the parameters' paths, shapes, dtypes and bytes (host copies, in tree order)."""
    digest = hashlib.sha256()
    # Replicated parameters of a multi-host run are not fully addressable: hash the local copy.
    for path, array in jax.tree_util.tree_flatten_with_path(parallel.fetch_to_host(params))[0]:
        digest.update(f"{jax.tree_util.keystr(path)}{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def result_key(config, step: int, params: Any) -> str:
    """A 12-hex-digit key of (config_for_results, step, params_digest)."""
    content = {
        "config": config_for_results(config),
        "step": int(step),
        "params": params_digest(params),
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
