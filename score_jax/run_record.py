"""The workdir's record of the config that trained it, and the check of later commands against it.

`score-jax train` writes the resolved config to <workdir>/config.json when it starts a run. A
command that reads the workdir later (resuming training, sampling, evaluation, likelihood) with a
config whose model, data or SDE settings differ would read the checkpoints as another model: it
is warned, with the keys that differ, before anything runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import ml_collections

log = logging.getLogger(__name__)

RECORD = "config.json"
# config.training settings that change what a trained network computes (its SDE and loss); the
# rest (step counts, logging, checkpoint cadence) does not.
SDE_TRAINING_KEYS = ("sde", "continuous", "reduce_mean", "likelihood_weighting")
# Where the data live and how the network is executed (kernels, compute dtype,
# rematerialisation) do not define the trained model either.
_NOT_DEFINING = {
    "data": ("data_dir", "path", "tfrecords_path"),
    "model": ("kernels", "dtype", "remat"),
}


def model_defining(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """model, data and the SDE / loss settings of config.training (less _NOT_DEFINING), as
    JSON-able values."""
    training = config.training
    parts = {
        section: {k: v for k, v in config[section].to_dict().items() if k not in dropped}
        for section, dropped in _NOT_DEFINING.items()
    }
    parts["training"] = {key: training.get(key) for key in SDE_TRAINING_KEYS}
    return json.loads(json.dumps(parts, default=str))  # as it reads back (tuples become lists)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(workdir: str | Path, config: ml_collections.ConfigDict) -> list[str]:
    """'key: recorded -> now' for each model-defining key that differs from the workdir's record
    ([] when there is no record)."""
    path = Path(workdir) / RECORD
    if not path.is_file():
        return []
    recorded = _flatten(model_defining(ml_collections.ConfigDict(json.loads(path.read_text()))))
    now = _flatten(model_defining(config))
    return [
        f"{key}: {recorded.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(recorded) | set(now))
        if recorded.get(key) != now.get(key)
    ]


def warn_if_different(workdir: str | Path, config: ml_collections.ConfigDict) -> list[str]:
    """Logs a warning naming every model-defining key that differs from the record."""
    changed = differences(workdir, config)
    if changed:
        log.warning(
            "The config differs from the one that trained %s (%s) in: %s. Results are those of "
            "the checkpoints read as the model the current config describes.",
            workdir,
            Path(workdir) / RECORD,
            "; ".join(changed),
        )
    return changed


def record_config(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    """Writes the resolved config to <workdir>/config.json (atomically)."""
    path = Path(workdir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
