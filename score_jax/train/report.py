"""The closing report of a training run (config.training.final_report): samples, bits/dim, baseline.

Writes `<workdir>/samples/final.png`, `<workdir>/report.json` and prints where they are, next
to the test bits/dim of the EMA weights and of a full-covariance Gaussian baseline.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from score_jax.images import save_samples_png
from score_jax.train.baseline import gaussian_baseline_bpd

log = logging.getLogger(__name__)
NUM_SAMPLES = 64


def _sample_grid(config, ema_params: Any, path: Path) -> Path:
    from score_jax.models import get_model
    from score_jax.sde import get_sde
    from score_jax.train.snapshots import make_sample_fn

    sample = make_sample_fn(config, get_sde(config), get_model(config), NUM_SAMPLES)
    local = jax.tree.map(lambda x: x.addressable_data(0), ema_params)
    x, _ = sample(local, jax.random.PRNGKey(config.seed + 5))
    x = np.clip(np.asarray(x), 0.0, 1.0) if np.ndim(x) == 4 else np.asarray(x)
    upscale = max(1, 64 // x.shape[1]) if x.ndim == 4 else 1
    return save_samples_png(x, path, upscale)


def final_report(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    step: int,
    ema_params: Any,
    train_seconds: float,
) -> dict:
    """Samples, test bits/dim of `ema_params` and the Gaussian baseline; returns the report."""
    from score_jax.evaluation.bpd import bpd_from_config
    from score_jax.evaluation.result_key import result_key

    workdir = Path(workdir)
    tic = time.perf_counter()
    report: dict[str, Any] = {"step": step, "train_seconds": round(train_seconds, 1)}
    if jax.process_index() == 0:
        try:
            report["samples_png"] = str(
                _sample_grid(config, ema_params, workdir / "samples" / "final.png")
            )
        except Exception as err:  # noqa: BLE001 -- the bits/dim below still matter
            log.warning("No final samples: %s: %s", type(err).__name__, err)
    # The folder `score-jax likelihood` uses for the same config, step and weights.
    folder = workdir / "likelihood" / f"test_step{step}_{result_key(config, step, ema_params)}"
    model = bpd_from_config(config, ema_params, "test", folder=folder, step=step)
    baseline = gaussian_baseline_bpd(config)
    report.update(
        test_bpd=model["bpd"],
        test_bpd_stderr=model["bpd_stderr"],
        baseline_bpd=baseline["bpd"],
        baseline_bpd_stderr=baseline["bpd_stderr"],
        baseline="full-covariance Gaussian fitted to the dequantized training images",
        report_seconds=round(time.perf_counter() - tic, 1),
    )
    if jax.process_index() == 0:
        path = workdir / "report.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, path)
        print(_summary(report, path, workdir), flush=True)
    return report


def _summary(report: dict, path: Path, workdir: Path) -> str:
    verdict = "beats" if report["test_bpd"] < report["baseline_bpd"] else "does NOT beat"
    return "\n".join(
        [
            "",
            f"Trained {report['step']} steps in {report['train_seconds']:.0f} s "
            f"(final report {report['report_seconds']:.0f} s).",
            f"  test bits/dim (EMA weights): {report['test_bpd']:.3f} "
            f"+- {report['test_bpd_stderr']:.3f}",
            f"  Gaussian baseline:           {report['baseline_bpd']:.3f} "
            f"+- {report['baseline_bpd_stderr']:.3f} (the score model {verdict} it)",
            f"  samples:     {report.get('samples_png', 'not written')}",
            f"  report:      {path}",
            f"  checkpoints: {workdir / 'checkpoints'}",
        ]
    )
