"""The closing report of a training run (config.training.final_report): samples, bits/dim, baseline.

It runs after training (the CLI hands it to `train` as `on_finish`), in the application layer,
because it uses evaluation's bits/dim. Writes `<workdir>/samples/final.png` and
`<workdir>/report.json` and prints where they are, next to the test bits/dim of the EMA weights
and of the classical baselines (`evaluation.baselines`: Gaussian, Gaussian mixtures, per-pixel
categorical) on the data's own quantization scale.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from score_jax.evaluation.baselines import baselines_bpd, format_baselines
from score_jax.evaluation.bpd import bpd_from_config, bpd_key
from score_jax.evaluation.result_key import result_key
from score_jax.images import save_samples_png
from score_jax.score_model import ScoreModel, make_sample_fn
from score_jax.state import TrainState

log = logging.getLogger(__name__)
NUM_SAMPLES = 64


def _sample_grid(config, score_model: ScoreModel, ema_params: Any, path: Path) -> Path:
    sample = make_sample_fn(config, score_model, NUM_SAMPLES)
    local = jax.tree.map(lambda x: x.addressable_data(0), ema_params)
    x, _ = sample(local, jax.random.PRNGKey(config.seed + 5))
    x = np.clip(np.asarray(x), 0.0, 1.0) if np.ndim(x) == 4 else np.asarray(x)
    upscale = max(1, 64 // x.shape[1]) if x.ndim == 4 else 1
    return save_samples_png(x, path, upscale)


def report_after_training(
    config: ml_collections.ConfigDict, workdir: str | Path, score_model: ScoreModel
) -> Callable[[TrainState, int, float], None]:
    """on_finish(state, steps run, seconds) for `train`: the final report, if the config asks
    for one and the run trained (an earlier run's report, with its training time, stands)."""
    workdir = Path(workdir)

    def on_finish(state: TrainState, steps_run: int, seconds: float) -> None:
        if not config.training.final_report:
            return
        if steps_run == 0 and (workdir / "report.json").is_file():
            log.info("Nothing left to train; the report is %s.", workdir / "report.json")
            return
        step = int(jax.device_get(state.step.addressable_data(0)))
        final_report(config, workdir, score_model, step, state.ema_params, seconds)

    return on_finish


def final_report(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    score_model: ScoreModel,
    step: int,
    ema_params: Any,
    train_seconds: float,
) -> dict:
    """Samples, test bits/dim of `ema_params` and the baselines; returns the report."""
    workdir = Path(workdir)
    tic = time.perf_counter()
    report: dict[str, Any] = {"step": step, "train_seconds": round(train_seconds, 1)}
    if jax.process_index() == 0:
        try:
            report["samples_png"] = str(
                _sample_grid(config, score_model, ema_params, workdir / "samples" / "final.png")
            )
        except Exception as err:  # noqa: BLE001 -- the bits/dim below still matter
            log.warning("No final samples: %s: %s", type(err).__name__, err)
    # The folder `score-jax likelihood` uses for the same config, step and weights.
    folder = workdir / "likelihood" / f"test_step{step}_{result_key(config, step, ema_params)}"
    model = bpd_from_config(
        config, ema_params, "test", folder=folder, step=step, score_model=score_model
    )
    report.update(
        test_bpd=model["bpd"],
        test_bpd_stderr=model["bpd_stderr"],
        levels=model["levels"],
        # Fitted on 'train', scored on the model's test points and dequantization noise.
        baselines=baselines_bpd(config, bpd_key(config, step)),
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
    scale = "" if report["levels"] is None else f" on the {report['levels']}-level scale"
    return "\n".join(
        [
            "",
            f"Trained {report['step']} steps in {report['train_seconds']:.0f} s "
            f"(final report {report['report_seconds']:.0f} s).",
            f"  test bits/dim (EMA weights){scale}: {report['test_bpd']:.3f} "
            f"+- {report['test_bpd_stderr']:.3f}",
            *format_baselines(report["baselines"], report["test_bpd"]),
            f"  samples:     {report.get('samples_png', 'not written')}",
            f"  report:      {path}",
            f"  checkpoints: {workdir / 'checkpoints'}",
        ]
    )
