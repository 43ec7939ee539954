"""Bits/dim of a dataset split under a score model (`score-jax likelihood`), sharded and resumable.

As the official evaluation: the split is read in order, images are uniformly dequantized on the
dataset's own grid of L levels (x = (k + u) / L, always, whatever
config.data.uniform_dequantization says; L = 256 for 8-bit data, 17 for the digits: see
`score_jax.data.quantization_levels`), scaled, and their probability-flow log-likelihood turned
into bits/dim with offset log2(L) - 1 - inverse_scaler(-1) (the official 7 - inverse_scaler(-1)
for 8-bit data); the whole split is evaluated `config.eval.bpd_repeats` times with fresh
noise (official: 5).
Float image data must already lie in [0, 1] and is refused otherwise; the toy MIXTURE data are
continuous points, reported with offset 0 (plain -log2 p / D).

The noise of example i in repeat r (dequantization and Hutchinson probe) is drawn from keys
folded from (seed, r, i), so it does not depend on the batch size, the devices or restarts.
Each global batch is one jitted program with its rows sharded over the mesh axis "data"; the
last, partial batch is padded and its padding masked out. Results of every batch are saved to
`<folder>/r<repeat>_b<batch>.npz` and skipped when the run restarts.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from score_jax import parallel
from score_jax.checkpoints import restore_for_inference
from score_jax.data import get_dataset, get_inverse_scaler, get_scaler, quantization_levels
from score_jax.evaluation.baselines import baselines_bpd, format_baselines
from score_jax.evaluation.result_key import result_key
from score_jax.likelihood import (
    HUTCHINSON_TYPES,
    bits_per_dim,
    bpd_offset,
    check_unit_range,
    dequantize,
    draw_probes,
    log_likelihood,
)
from score_jax.score_model import ScoreModel, build_score_model
from score_jax.sde import SDE, ScoreFn

log = logging.getLogger(__name__)

# (params, images [B, ...], example ids [B], mask [B], key, repeat)
#   -> (bpd [B], nats [B], nfe, ids [B], mask [B]), all replicated.
BpdStep = Callable[..., tuple]


def make_bpd_step(
    score_fn_builder: Callable[[Any], ScoreFn],
    sde: SDE,
    mesh: jax.sharding.Mesh,
    *,
    scaler: Callable[[jax.Array], jax.Array],
    offset: float,
    hutchinson: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    levels: int = 256,
) -> BpdStep:
    """One jitted program: dequantize (uint8 images only, `levels` levels), scale, solve,
    bits/dim of a batch.

    score_fn_builder(params) -> score_fn is called inside the program, so the parameters are
    arguments, not constants. Inputs are sharded over "data"; the outputs are replicated, so
    every host can read the whole batch's results.
    """
    if hutchinson not in HUTCHINSON_TYPES:
        raise ValueError(f"hutchinson must be one of {HUTCHINSON_TYPES}, got {hutchinson!r}")

    def step(params, images, ids, mask, key, repeat):
        dequant_key, probe_key = jax.random.split(key)
        if images.dtype == jnp.uint8:
            x = dequantize(dequant_key, images, ids, repeat, levels=levels)
        else:
            x = images
        x = scaler(x.astype(jnp.float32))
        noise = None
        if hutchinson != "exact":
            pass_key = jax.random.fold_in(probe_key, repeat)
            keys = jax.vmap(lambda i: jax.random.fold_in(pass_key, i))(ids)
            noise = jax.vmap(lambda k: draw_probes(k, hutchinson, x.shape[1:])[0])(keys)
        nats, _, nfe = log_likelihood(
            key, score_fn_builder(params), sde, x, hutchinson, rtol, atol, eps, noise=noise
        )
        return bits_per_dim(nats, x.shape, offset), nats, nfe, ids, mask

    return jax.jit(step, out_shardings=parallel.replicated(mesh))


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def dataset_bpd(
    bpd_step: BpdStep,
    params: Any,
    batches: Iterable[dict],
    mesh: jax.sharding.Mesh,
    *,
    key: jax.Array,
    repeats: int,
    folder: str | Path | None = None,
    num_batches: int | None = None,
    check_range: bool = True,
    settings: dict | None = None,
    progress: bool = True,
) -> dict:
    """Mean bits/dim (and its standard error) over `repeats` passes of `batches`.

    batches: re-iterable host-local batches {"image": [B_local, ...], "mask": bool [B_local]
    (optional)} in a fixed order, e.g. get_dataset(..., shuffle=False, num_epochs=1,
    drop_remainder=False). params must be replicated over `mesh`. With `folder`, each batch's
    results are written there and read back instead of recomputed on a restart. check_range
    refuses float images outside [0, 1] (off for data that are not images, e.g. MIXTURE).
    `settings` (JSON-able) is stored in the folder; a restart with other settings is refused
    rather than mixing results. In multi-host runs the folder must be on storage that every
    host sees (as the workdir's checkpoints), so that all hosts skip the same batches.
    """
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"config.eval.bpd_repeats must be an integer >= 1, got {repeats!r}")
    folder = None if folder is None else Path(folder)
    if folder is not None:
        _claim_folder(folder, settings or {})
    total = None if num_batches is None else repeats * num_batches
    bar = tqdm(total=total, desc="bits/dim", unit="batch", disable=not progress)
    results: list[dict[str, np.ndarray]] = []
    for repeat in range(repeats):
        row = 0  # global index of this batch's first example
        for i, batch in enumerate(batches):
            local = np.asarray(batch["image"])
            mask = np.asarray(batch.get("mask", np.ones(len(local), bool)))
            global_rows = len(local) * jax.process_count()
            path = None if folder is None else folder / f"r{repeat}_b{i:05d}.npz"
            if path is not None and path.is_file():
                with np.load(path) as saved:
                    results.append({k: saved[k] for k in saved.files})
            else:
                if check_range:
                    check_unit_range(local[mask], "dataset images")
                results.append(_run_batch(bpd_step, params, local, mask, row, mesh, key, repeat))
                if path is not None and jax.process_index() == 0:
                    _save_atomic(path, **results[-1])
            row += global_rows
            bar.update(1)
            bar.set_postfix(bpd=f"{np.mean(results[-1]['bpd']):.4f}")
    bar.close()
    return _summarise(results, repeats)


def _claim_folder(folder: Path, settings: dict) -> None:
    path = folder / "settings.json"
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != settings:
            changed = sorted(
                k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k)
            )
            diffs = ", ".join(f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{folder} holds bits/dim results computed with other settings ({diffs}). "
                "Delete that folder to start over."
            )
        return
    if jax.process_index() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
        os.replace(tmp, path)


def _run_batch(bpd_step, params, local, mask, first_row, mesh, key, repeat) -> dict:
    # Host p holds rows [p * B_local, (p + 1) * B_local) of the global batch.
    start = first_row + jax.process_index() * len(local)
    ids = (start + np.arange(len(local))).astype(np.int32)
    inputs = parallel.host_batch_to_global((local, ids, mask), mesh)
    bpd, nats, nfe, all_ids, keep = parallel.fetch_to_host(bpd_step(params, *inputs, key, repeat))
    keep = np.asarray(keep, bool)
    return {"bpd": bpd[keep], "nats": nats[keep], "ids": all_ids[keep], "nfe": np.asarray(nfe)}


def _summarise(results: list[dict], repeats: int) -> dict:
    bpd = np.concatenate([r["bpd"] for r in results]).astype(np.float64)
    if bpd.size == 0:
        raise ValueError("The dataset split yielded no examples to evaluate.")
    per_repeat = np.array_split(np.arange(len(results)), repeats)
    return {
        "bpd": float(bpd.mean()),
        "bpd_stderr": float(bpd.std(ddof=1) / math.sqrt(bpd.size)) if bpd.size > 1 else None,
        "bpd_per_repeat": [
            float(np.concatenate([results[j]["bpd"] for j in idx]).mean()) for idx in per_repeat
        ],
        "nats_mean": float(np.concatenate([r["nats"] for r in results]).mean()),
        "num_values": int(bpd.size),
        "repeats": repeats,
        "mean_nfe": float(np.mean([r["nfe"] for r in results])),
    }


def _config_bpd_step(
    config, score_model: ScoreModel, mesh: jax.sharding.Mesh, levels: int | None
) -> BpdStep:
    """make_bpd_step for the score model, config's scaler and the bits/dim offset of the data's
    `levels` (none for raw points, levels None)."""
    return make_bpd_step(
        score_model.score_fn,
        score_model.sde,
        mesh,
        scaler=get_scaler(config),
        offset=0.0 if levels is None else bpd_offset(get_inverse_scaler(config), levels),
        hutchinson=config.eval.bpd_hutchinson,
        levels=levels or 256,
    )


def bpd_key(config, step: int) -> jax.Array:
    """The key of `bpd_from_config`'s noise at checkpoint `step`: split(key)[0] dequantizes
    (example i of pass r: fold_in(fold_in(split(key)[0], r), i)), split(key)[1] draws probes."""
    return jax.random.fold_in(jax.random.PRNGKey(config.seed + 2), step)


def bpd_from_config(
    config,
    params: Any,
    split: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    folder: str | Path | None = None,
    step: int = 0,
    progress: bool = True,
    score_model: ScoreModel | None = None,
) -> dict:
    """Bits/dim of `split` under the EMA (or any) `params` of config's model (`score_model`
    when the caller built it already).

    The training loop and `score-jax eval` call this with their parameters; `step` only enters
    the noise keys, so that different checkpoints see different (but reproducible) noise.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    # Any eval.batch_size on any number of devices (one process): the batch is rounded up to a
    # multiple of the devices, the last one padded and masked. Per-example noise keys keep the
    # result independent of the batch size, up to the adaptive ODE solver's tolerance.
    batch_size = parallel.padded_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    levels = quantization_levels(config)
    continuous = levels is None  # raw points: no grid, no offset
    bpd_step = _config_bpd_step(config, score_model or build_score_model(config), mesh, levels)
    dataset = get_dataset(config, split, batch_size=batch_size, shuffle=False, seed=0,
                          num_epochs=1, drop_remainder=False)  # fmt: skip
    key = bpd_key(config, step)
    result = dataset_bpd(
        bpd_step,
        jax.device_put(params, parallel.replicated(mesh)),
        dataset,
        mesh,
        key=key,
        repeats=config.eval.bpd_repeats,
        folder=folder,
        num_batches=len(dataset),
        check_range=not continuous,
        settings={
            "dataset": config.data.dataset,
            "split": split,
            "batch_size": batch_size,
            "hutchinson": config.eval.bpd_hutchinson,
            "seed": config.seed,
            "step": step,
            "centered": config.data.centered,
            "image_size": config.data.get("image_size"),
            "levels": levels,
        },
        progress=progress and jax.process_index() == 0,
    )
    result.update(
        split=split,
        hutchinson=config.eval.bpd_hutchinson,
        continuous_data=continuous,
        levels=levels,
    )
    return result


def run_likelihood(config, workdir: str | Path, split: str, step: int | None = None) -> dict:
    """`score-jax likelihood`: bits/dim of a checkpoint's EMA weights on `split`.

    Per-batch results go to <workdir>/likelihood/<split>_step<k>_<key>/ (a restart skips them),
    the summary to the .json of that name; mean and standard error are printed. <key> is
    `result_key` of the config, step and parameters, so a run with another SDE, model, data or
    evaluation setting computes its own results instead of reading these.
    """
    step, params = restore_for_inference(workdir, config, step)
    root = Path(workdir) / "likelihood"
    name = f"{split}_step{step}_{result_key(config, step, params)}"
    result = bpd_from_config(config, params, split, folder=root / name, step=step)
    result["step"] = step
    if jax.process_index() == 0:
        if split == "test":  # fitted on 'train', scored on the same test points and noise
            result["baselines"] = baselines_bpd(config, bpd_key(config, step))
        path = root / f"{name}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
        os.replace(tmp, path)
        stderr = result["bpd_stderr"]
        scale = "" if result["levels"] is None else f", {result['levels']}-level scale"
        print(
            f"bits/dim on {split} at step {step}: {result['bpd']:.4f} +- "
            f"{stderr if stderr is None else f'{stderr:.4f}'} (standard error, "
            f"{result['num_values']} values, {result['repeats']} repeats{scale}); wrote {path}"
        )
        if split == "test":
            print("\n".join(format_baselines(result["baselines"], result["bpd"])))
    return result
