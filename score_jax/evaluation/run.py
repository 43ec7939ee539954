"""`score-jax eval`: evaluation loss, bits/dim and FID / IS / KID of a range of checkpoints.

Checkpoint number n (config.eval.begin_ckpt..end_ckpt, as in the official code) is the one at
step n * training.snapshot_freq; those that exist are evaluated in order (both None: the latest
checkpoint, whatever its step). Results go to
<workdir>/<eval_folder>/:
  report_<step>.json            the finished results of one checkpoint;
  ckpt_<step>_<key>/loss.json   partial results, kept when the run is interrupted;
  ckpt_<step>_<key>/bpd.json    (per-batch bits/dim in ckpt_<step>_<key>/bpd_batches/)
  ckpt_<step>_<key>/batch_<r>.npz  sample batch r (uint8) with its pool3 features and logits.
<key> (result_key.py) digests the config's model, data, eval and SDE settings, the seed, the
step and the parameters: a report or partial result is reused only under the same key (the
report records it), anything else is computed afresh. A restarted eval skips finished
checkpoints and saved batches; batch r is always drawn from
fold_in(fold_in(PRNGKey(seed), step), r), so an interrupted run ends with the same numbers
as an uninterrupted one. Metrics are computed by streaming the batch files, so the host holds
one batch of images at a time.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from score_jax import parallel
from score_jax.checkpoints import checkpoint_dir, list_steps, restore_for_inference
from score_jax.data import get_dataset
from score_jax.evaluation import metrics
from score_jax.evaluation.bpd import bpd_from_config
from score_jax.evaluation.features import FeatureExtractor
from score_jax.evaluation.result_key import result_key
from score_jax.evaluation.sample import host_samples, make_batch_sampler, place_params, to_uint8
from score_jax.evaluation.stats import default_stats_path, load_stats, save_npz_atomic
from score_jax.evaluation.weights import load_inception
from score_jax.objective import make_eval_step, make_loss_fn
from score_jax.score_model import build_score_model

log = logging.getLogger(__name__)
# Inception Score as Salimans et al. report it (mean and std over 10 splits), beside the
# score_sde / TF-GAN number computed over all samples at once.
IS_SPLITS = 10


def _write_json(path: Path, value: dict) -> None:
    if jax.process_index() != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _cached(path: Path, compute) -> dict:
    """The JSON at `path`, or compute() written there first."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    _write_json(path, value)
    return value


def checkpoints_to_evaluate(config, workdir: str | Path) -> list[int]:
    """Steps of the existing checkpoints numbered begin_ckpt..end_ckpt (checkpoint n is step
    n * training.snapshot_freq); with both None, the latest checkpoint."""
    freq = config.training.snapshot_freq
    begin, end = config.eval.begin_ckpt, config.eval.end_ckpt
    steps = list_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(workdir)}.")
    if begin is None and end is None:
        return steps[-1:]
    begin = 1 if begin is None else begin
    end = max(steps) // freq if end is None else end
    chosen = [s for s in steps if s % freq == 0 and begin <= s // freq <= end]
    if not chosen:
        numbered = {s: s // freq for s in steps if s % freq == 0}
        raise FileNotFoundError(
            f"No checkpoint numbered {begin}..{end} in {checkpoint_dir(workdir)} (checkpoint n "
            f"is step n * training.snapshot_freq = n * {freq}). Its steps are {steps}"
            + (f", numbered {sorted(set(numbered.values()))}" if numbered else ", none of them a "
               "multiple of training.snapshot_freq") + ". Evaluate the latest with "
            "--config.eval.begin_ckpt=None --config.eval.end_ckpt=None."
        )  # fmt: skip
    return chosen


def _eval_loss(config, params, step: int, mesh) -> dict:
    """Mean loss over the test split's full batches, as the official evaluation."""
    score_model = build_score_model(config)
    loss_fn = make_loss_fn(config, score_model.sde, score_model.model.apply, train=False)
    eval_step = make_eval_step(config, loss_fn, mesh)
    batch_size = config.eval.batch_size
    dataset = get_dataset(config, "test", batch_size=batch_size, shuffle=False, seed=0,
                          num_epochs=1)  # fmt: skip
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), step)
    losses = []
    bar = tqdm(dataset, desc=f"loss {step}", unit="batch", leave=False,
               disable=jax.process_index() > 0)  # fmt: skip
    for i, batch in enumerate(bar):
        images = parallel.padded_batch_to_global(batch["image"], mesh, batch_size)
        losses.append(float(eval_step(params, images, jax.random.fold_in(key, i))))
    if not losses:
        raise ValueError(
            f"config.eval.batch_size={batch_size} is larger than the test split; no full batch."
        )
    return {"eval_loss": float(np.mean(losses)), "eval_loss_batches": len(losses)}


def _bits_per_dim(config, params, step: int, mesh, folder: Path) -> dict:
    """Bits/dim on eval.bpd_dataset; its per-batch results live in `folder` (resumable)."""
    split = config.eval.bpd_dataset
    result = bpd_from_config(config, params, split, mesh=mesh, folder=folder, step=step)
    return {
        "bits_per_dim": result["bpd"],
        "bits_per_dim_stderr": result["bpd_stderr"],
        "bpd_dataset": split,
    }


def _check_sampling_settings(config, folder: Path) -> None:
    """Refuses to mix saved sample batches drawn with other settings into this evaluation."""
    settings = {
        "batch_size": config.eval.batch_size,
        "seed": config.seed,
        "sampling": config.sampling.to_dict(),
        "sde": config.training.sde,
        "num_scales": config.model.num_scales,
        "image_size": config.data.image_size,
    }
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    path = folder / "sampling_settings.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != settings:
            changed = sorted(k for k in settings if stored.get(k) != settings[k])
            raise ValueError(
                f"{folder} holds sample batches drawn with other settings ({', '.join(changed)}"
                f" changed). Use another --eval_folder, or delete {folder} to start over."
            )
    else:
        _write_json(path, settings)


def _sample_batches(config, params, step, folder: Path, mesh, extractor) -> int:
    """Draws and featurises every missing batch file of this checkpoint; returns the count."""
    batch_size, num = config.eval.batch_size, config.eval.num_samples
    _check_sampling_settings(config, folder)
    rounds = -(-num // batch_size)
    missing = [r for r in range(rounds) if not (folder / f"batch_{r}.npz").is_file()]
    if missing:
        sample = make_batch_sampler(config, batch_size, mesh)
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
        bar = tqdm(missing, desc=f"samples {step}", unit="batch", leave=False,
                   initial=rounds - len(missing), total=rounds,
                   disable=jax.process_index() > 0)  # fmt: skip
        for r in bar:
            x, _ = sample(params, jax.random.fold_in(key, r))
            images = to_uint8(host_samples(x))
            pool3, logits = extractor(images.astype(np.float32) / 255.0)
            if jax.process_index() == 0:
                save_npz_atomic(folder / f"batch_{r}.npz", samples=images, pool_3=pool3,
                                logits=logits)  # fmt: skip
    return rounds


def sample_metrics(folder: Path, rounds: int, num: int, data_stats: dict) -> dict:
    """FID, IS and KID of the first `num` samples in batch files 0..rounds-1 of `folder`."""
    gaussian = metrics.GaussianAccumulator()
    scores = metrics.InceptionScoreAccumulator(total=num, splits=1)
    split_scores = metrics.InceptionScoreAccumulator(total=num, splits=min(IS_SPLITS, num))
    reservoir = metrics.FeatureReservoir()
    left = num
    for r in range(rounds):
        with np.load(folder / f"batch_{r}.npz") as batch:
            pool3, logits = batch["pool_3"][:left], batch["logits"][:left]
        left -= len(pool3)
        gaussian, reservoir = gaussian.update(pool3), reservoir.update(pool3)
        scores, split_scores = scores.update(logits), split_scores.update(logits)
    mu, sigma = gaussian.mean_and_covariance()
    result = {
        "fid": metrics.frechet_distance(mu, sigma, data_stats["mu"], data_stats["sigma"]),
        "inception_score": scores.result()[0],
        "inception_score_10_splits": list(split_scores.result()),
        "num_samples": num,
    }
    if "pool_3" in data_stats:
        kid_mean, kid_std = metrics.kid(reservoir.rows, data_stats["pool_3"])
        result.update(kid=kid_mean, kid_std=kid_std)
    else:
        log.warning("The FID stats file has no pool_3 features; KID is skipped.")
        result.update(kid=None, kid_std=None)
    return result


def _evaluate_checkpoint(config, step: int, params, folder: Path, mesh, tools) -> dict:
    """The report of one checkpoint; partial results are kept in `folder`."""
    report = {"step": step, "ckpt": step // config.training.snapshot_freq}
    if config.eval.enable_loss:
        report.update(_cached(folder / "loss.json", lambda: _eval_loss(config, params, step, mesh)))
    if config.eval.enable_bpd:
        report.update(
            _cached(
                folder / "bpd.json",
                lambda: _bits_per_dim(config, params, step, mesh, folder / "bpd_batches"),
            )
        )
    if config.eval.enable_sampling:
        rounds = _sample_batches(config, params, step, folder, mesh, tools["extractor"])
        report.update(sample_metrics(folder, rounds, config.eval.num_samples, tools["stats"]))
        report["fid_stats"] = str(tools["stats_path"])
        report["inception_weights_verified"] = tools["weights_verified"]
    return report


def _prepare_sampling_tools(config, mesh) -> dict[str, Any]:
    """Inception and reference statistics, loaded before any sampling so bad paths fail fast."""
    if config.data.dataset == "MIXTURE":
        raise ValueError("FID/IS/KID need images; set --config.eval.enable_sampling=False.")
    stats_path = default_stats_path(config)
    data_stats = load_stats(stats_path)
    variables, verified = load_inception(config)
    extractor = FeatureExtractor(variables, config.eval.batch_size, mesh)
    return {
        "extractor": extractor,
        "stats": data_stats,
        "stats_path": stats_path,
        "weights_verified": verified,
    }


def format_summary(reports: dict[int, dict]) -> str:
    """A fixed-width table: one row per checkpoint."""
    columns = [("step", "{:d}"), ("eval_loss", "{:.5g}"), ("bits_per_dim", "{:.4f}"),
               ("fid", "{:.3f}"), ("inception_score", "{:.3f}"), ("kid", "{:.5f}")]  # fmt: skip
    lines = ["  ".join(f"{name:>15s}" for name, _ in columns)]
    for step in sorted(reports):
        cells = []
        for name, fmt in columns:
            value = reports[step].get(name)
            cells.append(f"{'-' if value is None else fmt.format(value):>15s}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _report_of(config, workdir, step: int, eval_dir: Path, mesh, tools) -> dict:
    """The saved report of this checkpoint if it was made with these settings and weights (the
    same `result_key`), else a new evaluation, saved."""
    _, params = restore_for_inference(workdir, config, step)
    key = result_key(config, step, params)
    path = eval_dir / f"report_{step}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("result_key") == key:
            log.info("Checkpoint step %d already evaluated: %s", step, path)
            return saved
        log.warning(
            "%s was computed with other settings or weights (key %s, now %s); evaluating again.",
            path,
            saved.get("result_key"),
            key,
        )
    folder = eval_dir / f"ckpt_{step}_{key}"
    report = _evaluate_checkpoint(config, step, place_params(params, mesh), folder, mesh, tools)
    report["result_key"] = key
    _write_json(path, report)
    log.info("Checkpoint step %d: %s", step, json.dumps(report))
    return report


def evaluate(config, workdir: str | Path, eval_folder: str = "eval") -> dict[int, dict]:
    """Evaluates every checkpoint in range; returns {step: report} and prints a summary."""
    eval_dir = Path(workdir) / eval_folder
    steps = checkpoints_to_evaluate(config, workdir)
    mesh = parallel.make_mesh()
    tools = _prepare_sampling_tools(config, mesh) if config.eval.enable_sampling else {}
    reports = {}
    for step in steps:
        reports[step] = _report_of(config, workdir, step, eval_dir, mesh, tools)
    if jax.process_index() == 0:
        print(format_summary(reports))
        if any(r.get("inception_weights_verified") is False for r in reports.values()):
            print("WARNING: FID / IS / KID above come from UNVERIFIED Inception weights.")
    return reports
