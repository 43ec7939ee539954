"""`score-jax train`: the training loop, from a config and a work directory.

The loop resumes from the latest checkpoint in `workdir`, feeds `n_jitted_steps` global batches
per compiled call, and after each call looks at the losses once on the host: a NaN or Inf stops
the run (naming the step) before anything is saved, so the last checkpoint on disk is always a
finite state. SIGTERM (preemption) saves the current state and returns. Process 0 alone writes
metrics (`metrics.jsonl`, TensorBoard), the progress bar and sample pictures; every process
takes part in checkpointing, as Orbax requires.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import numpy as np

from score_jax import parallel
from score_jax.sde import get_sde
from score_jax.train import checkpoints
from score_jax.train.metrics import MetricsWriter
from score_jax.train.optimizer import get_optimizer
from score_jax.train.snapshots import make_snapshot_sampler
from score_jax.train.state import TrainState, create_train_state
from score_jax.train.step import make_eval_step, make_loss_fn, make_train_step

log = logging.getLogger(__name__)


class TrainingDivergedError(ValueError):
    """The loss or the gradient became NaN or Inf; the run stopped without saving."""


class _StopSignal:
    """Turns SIGTERM into a flag the loop checks after each compiled call."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no preemption handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self) -> bool:
        """True on every process once any process got SIGTERM."""
        if jax.process_count() == 1:
            return self.raised
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.raised, np.int32))
        return bool(np.any(flags))


def check_training_config(config: ml_collections.ConfigDict, n_devices: int) -> None:
    """Refuses settings the loop cannot honour, naming the key."""
    t = config.training
    if t.n_jitted_steps < 1:
        raise ValueError(f"config.training.n_jitted_steps must be >= 1, got {t.n_jitted_steps}.")
    for key in ("snapshot_freq", "snapshot_freq_for_preemption", "log_freq", "eval_freq"):
        value = t[key]
        if value <= 0 or value % t.n_jitted_steps:
            raise ValueError(
                f"config.training.{key}={value} must be a positive multiple of "
                f"config.training.n_jitted_steps={t.n_jitted_steps}."
            )
    for key, value in (("training", t.batch_size), ("eval", config.eval.batch_size)):
        if value % n_devices or value % jax.process_count():
            raise ValueError(
                f"config.{key}.batch_size={value} must be divisible by the number of devices "
                f"({n_devices}) and of processes ({jax.process_count()})."
            )


def host_batches(
    config: ml_collections.ConfigDict, split: str, batch_size: int, seed: int, start_step: int = 0
) -> Iterator[dict]:
    """This host's share of an endless stream of shuffled global batches, from `start_step`.

    The stream is a pure function of the seed, so a resumed run sees the same batches."""
    from score_jax.data import get_dataset

    dataset = get_dataset(
        config, split, batch_size=batch_size, shuffle=True, seed=seed, start_step=start_step
    )
    return iter(dataset)


def _train_stream(config, mesh, start_step: int) -> Iterator[tuple[int, jax.Array]]:
    """(n, global images [n, B, ...]) for each call, continuing the stream at `start_step`."""
    t = config.training
    batches = host_batches(config, "train", t.batch_size, config.seed, start_step)
    step = start_step
    while step < t.n_iters:
        n = min(t.n_jitted_steps, t.n_iters - step)
        images = np.stack([next(batches)["image"] for _ in range(n)])
        yield n, parallel.host_batch_to_global(images, mesh, batch_axis=1)
        step += n


def _initial_state(config, mesh, optimizer) -> TrainState:
    from score_jax.models import init_model

    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = init_model(init_key, config)["params"]
    return parallel.replicate(create_train_state(params, optimizer, state_key), mesh)


def _first_bad(losses: np.ndarray, norms: np.ndarray) -> int | None:
    bad = ~(np.isfinite(losses) & np.isfinite(norms))
    return int(np.argmax(bad)) if bad.any() else None


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Trains (or resumes) until config.training.n_iters; returns the final state."""
    from score_jax.models import get_model

    workdir = Path(workdir)
    t = config.training
    # Orbax reports every file it writes at INFO through absl; keep the console readable.
    logging.getLogger("absl").setLevel(logging.WARNING)
    is_main = jax.process_index() == 0
    mesh = parallel.make_mesh()
    check_training_config(config, mesh.devices.size)

    sde = get_sde(config)
    model = get_model(config)
    optimizer = get_optimizer(config)
    state = _initial_state(config, mesh, optimizer)
    keep = int(t.keep_checkpoints)
    manager = checkpoints.make_manager(workdir, t.snapshot_freq, keep)
    restored = checkpoints.restore_state(manager, state, parallel.replicated(mesh))
    if restored is not None:
        state = restored
    start = int(jax.device_get(state.step.addressable_data(0)))
    last_saved = start if restored is not None else None
    if is_main:
        verb = f"Resuming from step {start}" if restored is not None else "Starting"
        log.info(
            "%s in %s on %d device(s), %d process(es).",
            verb,
            workdir,
            mesh.devices.size,
            jax.process_count(),
        )

    train_step = make_train_step(
        config, make_loss_fn(config, sde, model.apply, True), optimizer, mesh
    )
    eval_step = make_eval_step(config, make_loss_fn(config, sde, model.apply, False), mesh)
    eval_batches = host_batches(config, "test", config.eval.batch_size, config.seed + 1)
    eval_key = jax.random.PRNGKey(config.seed + 2)
    sampler = make_snapshot_sampler(config, sde, model) if t.snapshot_sampling else None
    writer = MetricsWriter(workdir)
    bar = _progress_bar(start, t.n_iters, is_main)

    def save(state: TrainState) -> None:
        nonlocal last_saved
        checkpoints.save_state(manager, state)
        last_saved = int(jax.device_get(state.step.addressable_data(0)))

    step = start
    started = time.perf_counter()
    try:
        with _StopSignal() as stop:
            for n, images in _train_stream(config, mesh, start):
                tic = time.perf_counter()
                state, (losses, norms) = train_step(state, images)
                losses, norms = (
                    np.asarray(losses.addressable_data(0)),
                    np.asarray(norms.addressable_data(0)),
                )
                bad = _first_bad(losses, norms)
                if bad is not None:
                    raise TrainingDivergedError(
                        _divergence_message(
                            step + bad, losses[bad], norms[bad], last_saved, workdir
                        )
                    )
                first, step = step, step + n
                rate = n / max(time.perf_counter() - tic, 1e-9)
                _log_steps(writer, first, losses, norms, t.log_freq)
                bar.update(n)
                bar.set_postfix(loss=f"{losses[-1]:.4g}", steps_per_s=f"{rate:.2f}")
                if step % t.eval_freq == 0:
                    batch = next(eval_batches)["image"]
                    images = parallel.host_batch_to_global(batch, mesh)
                    key = jax.random.fold_in(eval_key, step)
                    eval_loss = eval_step(state.ema_params, images, key)
                    writer.write(step, {"eval_loss": float(eval_loss.addressable_data(0))})
                if step % t.snapshot_freq_for_preemption == 0 or step % t.snapshot_freq == 0:
                    save(state)
                if sampler is not None and step % t.snapshot_freq == 0:
                    sampler(state.ema_params, step, workdir)
                if stop.agreed():
                    if last_saved != step:
                        save(state)
                    log.info("SIGTERM: saved step %d in %s; exiting.", step, workdir)
                    return state
            if last_saved != step:
                save(state)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        bar.close()
    if is_main:
        log.info(
            "Training finished at step %d; checkpoints in %s.",
            step,
            checkpoints.checkpoint_dir(workdir),
        )
    if t.final_report:
        from score_jax.train.report import final_report

        final_report(config, workdir, step, state.ema_params, time.perf_counter() - started)
    return state


def _divergence_message(step: int, loss, norm, last_saved: int | None, workdir: Path) -> str:
    good = "none" if last_saved is None else f"step {last_saved}"
    return (
        f"Training diverged at step {step + 1}: loss {loss}, gradient norm {norm} (the update "
        f"from step {step}). Stopped without saving; the last good checkpoint is {good} in "
        f"{checkpoints.checkpoint_dir(workdir)}."
    )


def _log_steps(writer, first: int, losses, norms, log_freq: int) -> None:
    for i in range(len(losses)):
        step = first + i + 1
        if step % log_freq == 0:
            writer.write(step, {"train_loss": losses[i], "grad_norm": norms[i]})


def _progress_bar(start: int, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(initial=start, total=total, disable=not enabled, unit="step", dynamic_ncols=True)
