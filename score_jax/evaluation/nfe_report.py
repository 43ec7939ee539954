"""`score-jax nfe-report`: sample quality against the number of score evaluations, per sampler.

    score-jax nfe-report --config CFG --workdir DIR --samplers pc:1000 dpm_solver++:10,20 heun:35

Each setting METHOD[-ORDER]:NFE[,NFE...] is a `get_sampler` method at a total NFE:
  * pc: N = NFE / (score evaluations per level of the config's predictor and corrector) noise
    levels; only continuous-time models, whose levels are free;
  * dpm_solver++, dpm_solver, heun: sampling.steps = NFE, less one when noise_removal (the final
    data prediction is an evaluation too); -ORDER sets sampling.order (dpm_solver-3).
The metric is the sliced Wasserstein distance (`swd.py`, seeded directions) of --num samples
(images as saved: uint8 / 255, flattened) to the whole test split, with a bootstrap standard
error over the samples. The row 'data (train)' measures --num training examples the same way:
what a perfect sampler would score at this sample size. --classifier_score adds the
Inception-score-like statistic of a pixel logistic regression fitted to the labelled training
split (`pixel_classifier.py`; its data row is in-sample, so slightly optimistic). Every
sampler draws from the same keys, so the ODE samplers start from the same latents.

Writes to <workdir>/<out_folder>/: <label>_nfe<N>.json per finished setting (a rerun skips it),
report.json with all rows, report.png (SWD against NFE), and prints the table.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from score_jax.checkpoints import restore_for_inference
from score_jax.data import get_source
from score_jax.evaluation.pixel_classifier import classifier_score, fit_pixel_classifier
from score_jax.evaluation.plot import save_line_plot
from score_jax.evaluation.swd import sliced_wasserstein
from score_jax.score_model import build_score_model, make_sample_fn

log = logging.getLogger(__name__)
FAST_METHODS = ("dpm_solver++", "dpm_solver", "heun")
ORDERED = ("dpm_solver++", "dpm_solver")
NUM_PROJECTIONS = 1000
BOOTSTRAP = 20


def split_label(label: str) -> tuple[str, int | None]:
    """'dpm_solver-3' -> ('dpm_solver', 3); 'pc' -> ('pc', None). Unknown names raise."""
    method, order = label, None
    head, sep, tail = label.rpartition("-")
    if sep and tail.isdigit():
        method, order = head, int(tail)
    if method not in ("pc", *FAST_METHODS):
        raise ValueError(
            f"unknown sampler {label!r}; use pc, {', '.join(FAST_METHODS)}, "
            f"or {' / '.join(ORDERED)} with -ORDER (dpm_solver-3)"
        )
    if order is not None and method not in ORDERED:
        raise ValueError(f"sampler {label!r}: only {' and '.join(ORDERED)} take an -ORDER")
    return method, order


def parse_settings(specs: Sequence[str]) -> list[tuple[str, int]]:
    """['pc:1000', 'dpm_solver++:10,20'] -> [('pc', 1000), ('dpm_solver++', 10), ...]."""
    settings = []
    for spec in specs:
        label, sep, nfes = spec.partition(":")
        if not sep or not nfes:
            raise ValueError(
                f"sampler setting {spec!r}: expected METHOD[-ORDER]:NFE[,NFE...], "
                "e.g. dpm_solver++:10,20"
            )
        split_label(label)
        for text in nfes.split(","):
            if not text.strip().isdigit() or int(text) < 1:
                raise ValueError(f"sampler setting {spec!r}: NFE {text!r} is not an int >= 1")
            if (label, int(text)) not in settings:
                settings.append((label, int(text)))
    if not settings:
        raise ValueError("no sampler settings given (--samplers METHOD:NFE ...)")
    return settings


def setting_config(config, label: str, nfe: int) -> ml_collections.ConfigDict:
    """A copy of config whose sampling section (and, for pc, model.num_scales) runs `label`
    at `nfe` score evaluations."""
    method, order = split_label(label)
    c = config.copy_and_resolve_references()
    s = c.sampling
    if method == "pc":
        per_level = (str(s.predictor).lower() != "none") + (
            str(s.corrector).lower() != "none"
        ) * int(s.n_steps_each)
        if nfe % per_level:
            raise ValueError(
                f"pc:{nfe}: not a multiple of the {per_level} score evaluations per noise level "
                f"of predictor {s.predictor!r} + corrector {s.corrector!r}"
            )
        levels = nfe // per_level
        if not c.training.continuous and levels != c.model.num_scales:
            raise ValueError(
                f"pc:{nfe}: a discrete-time model has its noise levels fixed at "
                f"model.num_scales={c.model.num_scales}; pc runs only at "
                f"NFE {c.model.num_scales * per_level} for it"
            )
        s.method, c.model.num_scales = "pc", levels
        return c
    steps = nfe - int(bool(s.noise_removal))
    if steps < 1:
        raise ValueError(f"{label}:{nfe}: needs NFE >= 2 with sampling.noise_removal")
    s.method, s.steps = method, steps
    if order is not None:
        s.order = order
    return c


def _as_points(x: np.ndarray) -> np.ndarray:
    """Samples or data [N, ...] as the metric sees them: images quantized like saved files."""
    x = np.asarray(x)
    if x.ndim == 2:
        return x.astype(np.float64)
    if x.dtype != np.uint8:
        x = np.clip(x * 255.0, 0, 255).astype(np.uint8)
    return x.reshape(len(x), -1).astype(np.float64) / 255.0


def _split_examples(config, split: str, num: int | None = None) -> dict:
    source = get_source(config, split)
    n = len(source)
    index = np.arange(n) if num is None else np.random.default_rng(0).permutation(n)[:num]
    return source.read(np.sort(index))


def _split_points(config, split: str, num: int | None = None) -> np.ndarray:
    return _as_points(_split_examples(config, split, num)["image"])


def make_scorer(config, with_classifier: bool) -> tuple[Callable[[np.ndarray], dict], int]:
    """(points [N, D] -> the row's metrics, number of test examples): SWD to the test split,
    and the pixel classifier's score when with_classifier."""
    reference = _split_points(config, "test")
    classifier = None
    if with_classifier:
        train = _split_examples(config, "train")
        classifier = fit_pixel_classifier(_as_points(train["image"]), np.asarray(train["label"]))

    def score(points: np.ndarray) -> dict:
        row = measure(points, reference)
        if classifier is not None:
            row |= classifier_score(classifier, points)
        return row

    return score, len(reference)


def measure(x: np.ndarray, reference: np.ndarray) -> dict:
    """{"swd", "swd_se"}: SWD of points x to reference, bootstrap standard error over x."""
    rng = np.random.default_rng(0)
    boots = [
        sliced_wasserstein(x[rng.integers(0, len(x), len(x))], reference, NUM_PROJECTIONS)
        for _ in range(BOOTSTRAP)
    ]
    value = sliced_wasserstein(x, reference, NUM_PROJECTIONS)
    return {"swd": value, "swd_se": float(np.std(boots, ddof=1))}


def _draw(config, params, num: int, batch: int, key) -> tuple[np.ndarray, int, float]:
    """num samples of the setting's sampler: (points, nfe, wall seconds incl. compilation).

    The setting's config may change the SDE's discretisation (PC), so each builds its own."""
    start = time.perf_counter()
    sample = make_sample_fn(config, build_score_model(config), batch)
    batches, nfe = [], 0
    for r in range(-(-num // batch)):
        x, nfe = sample(params, jax.random.fold_in(key, r))
        batches.append(_as_points(np.asarray(x)))
    return np.concatenate(batches)[:num], int(nfe), time.perf_counter() - start


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def format_table(rows: list[dict]) -> str:
    scored = "classifier_score" in rows[0]
    head = f"{'sampler':>16s} {'NFE':>6s} {'SWD':>9s} {'+-se':>8s}"
    lines = [head + (f" {'cls score':>9s} {'+-se':>6s}" if scored else "") + f" {'seconds':>8s}"]
    for r in rows:
        nfe = "-" if r["nfe"] is None else str(r["nfe"])
        secs = "-" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        line = f"{r['sampler']:>16s} {nfe:>6s} {r['swd']:9.5f} {r['swd_se']:8.5f}"
        if scored:
            line += f" {r['classifier_score']:9.3f} {r['classifier_score_se']:6.3f}"
        lines.append(f"{line} {secs:>8s}")
    return "\n".join(lines)


def _finished_row(path: Path, with_classifier: bool) -> dict | None:
    """The row a previous run wrote to path, if it has every metric asked for now."""
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    return None if with_classifier and "classifier_score" not in row else row


def _write_plot(rows: list[dict], folder: Path, num: int) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows[1:]:
        series.setdefault(r["sampler"], []).append((r["nfe"], r["swd"]))
    ylabel = f"SWD to the test split, {num} samples"
    hline = {"data (train)": rows[0]["swd"]}
    save_line_plot(series, folder / "report.png", "score evaluations (NFE)", ylabel, hline)


def nfe_report(
    config,
    workdir: str | Path,
    samplers: Sequence[str],
    num: int = 2000,
    out_folder: str = "nfe_report",
    step: int | None = None,
    batch_size: int | None = None,
    with_classifier: bool = False,
) -> dict:
    """Runs every setting of `samplers` (see the module docstring); returns the report dict."""
    if num < 2:
        raise ValueError(f"--num must be at least 2, got {num}")
    settings = parse_settings(samplers)
    configs = {s: setting_config(config, *s) for s in settings}  # all checked before sampling
    batch = min(int(batch_size or config.eval.batch_size), num)
    folder = Path(workdir) / out_folder
    score, test_examples = make_scorer(config, with_classifier)
    step, params = restore_for_inference(workdir, config, step)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
    rows = [{"sampler": "data (train)", "nfe": None, **score(_split_points(config, "train", num))}]
    for (label, nfe), c in configs.items():
        path = folder / f"{label}_nfe{nfe}.json"
        row = _finished_row(path, with_classifier)
        if row is None:
            log.info("Sampling %d with %s at %d NFE", num, label, nfe)
            x, counted, seconds = _draw(c, params, num, batch, key)
            if counted != nfe:
                raise AssertionError(f"{label}: asked for {nfe} NFE, the sampler reports {counted}")
            row = {"sampler": label, "nfe": nfe, **score(x), "seconds": seconds}
            _write_json(path, row)
        rows.append(row)
    metric = f"sliced Wasserstein-2, {NUM_PROJECTIONS} directions"
    report = {"step": step, "num_samples": num, "test_examples": test_examples, "metric": metric}
    report["rows"] = rows
    _write_json(folder / "report.json", report)
    _write_plot(rows, folder, num)
    print(format_table(rows))
    print(f"Report: {folder / 'report.json'}, plot: {folder / 'report.png'}")
    return report
