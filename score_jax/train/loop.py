"""`score-jax train`: the training loop, from a config and a work directory.

The loop resumes from the latest checkpoint in `workdir`, feeds `n_jitted_steps` global batches
per compiled call, and after each call looks at the losses once on the host: a NaN or Inf stops
the run (naming the step) before anything is saved, so the last checkpoint on disk is always a
finite state. SIGTERM (preemption) saves the current state and raises TrainingPreempted (the
CLI exits with EXIT_PREEMPTED, 75); SIGINT (Ctrl-C) saves it and raises KeyboardInterrupt (the
CLI exits with 130). A resumed run logs the step and the
checkpoint it starts from, runs only the remaining steps (the log's last line counts them), and
continues the training and evaluation streams and the per-step keys fold_in(rng, step) where
they were, so its final state is bitwise that of a run that never stopped, whatever
`n_jitted_steps` each part used. Process 0 alone writes metrics (`metrics.jsonl`, TensorBoard;
what an interrupted run logged after its last checkpoint is dropped on resume), the progress bar
and sample pictures; every process takes part in checkpointing, as Orbax requires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from score_jax import checkpoints, parallel, run_record
from score_jax.data import get_dataset
from score_jax.errors import TrainingPreempted
from score_jax.models import init_model
from score_jax.objective import make_eval_step, make_loss_fn
from score_jax.score_model import ScoreModel, build_score_model
from score_jax.state import TrainState, create_train_state
from score_jax.train.metrics import MetricsWriter
from score_jax.train.optimizer import get_optimizer
from score_jax.train.snapshots import make_snapshot_sampler
from score_jax.train.step import make_train_step

log = logging.getLogger(__name__)


class TrainingDivergedError(ValueError):
    """The loss or the gradient became NaN or Inf; the run stopped without saving."""


class _StopSignal:
    """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag the loop checks after each
    compiled call.

    The handlers stay installed until the last checkpoint is written, so a second signal (a
    repeated SIGTERM, an impatient Ctrl-C) cannot cut that save short: it only prints a note.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.name: str | None = None
        self._previous = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no signal handling
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.name is None:
            self.name = signal.Signals(signum).name
            return
        # No logging here: a handler may interrupt the logging module while it holds its lock.
        note = (
            f"{signal.Signals(signum).name}: already stopping after {self.name}; saving the "
            "checkpoint first (SIGKILL aborts; the last finished checkpoint stays valid).\n"
        )
        os.write(2, note.encode())

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    @property
    def raised(self) -> bool:
        return self.name is not None

    def agreed(self) -> bool:
        """True on every process once any process got a stop signal."""
        if jax.process_count() == 1:
            return self.raised

        flags = multihost_utils.process_allgather(np.asarray(self.raised, np.int32))
        return bool(np.any(flags))


def check_training_config(
    config: ml_collections.ConfigDict, n_devices: int, pads_batches: bool = False
) -> None:
    """Refuses settings the loop cannot honour, naming the key. With `pads_batches` (the score
    model's loop) a single process pads batches to the devices, so any batch size works."""
    t = config.training
    if t.n_iters < 1:
        raise ValueError(f"config.training.n_iters must be >= 1, got {t.n_iters}.")
    if t.n_jitted_steps < 1:
        raise ValueError(f"config.training.n_jitted_steps must be >= 1, got {t.n_jitted_steps}.")
    for key in ("snapshot_freq", "snapshot_freq_for_preemption", "log_freq", "eval_freq"):
        value = t[key]
        if value <= 0 or value % t.n_jitted_steps:
            raise ValueError(
                f"config.training.{key}={value} must be a positive multiple of "
                f"config.training.n_jitted_steps={t.n_jitted_steps}."
            )
    if pads_batches and jax.process_count() == 1:
        return
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
        yield n, parallel.padded_batch_to_global(images, mesh, t.batch_size, batch_axis=1)
        step += n


def _initial_state(config, mesh, optimizer) -> TrainState:
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = init_model(init_key, config)["params"]
    return parallel.replicate(create_train_state(params, optimizer, state_key), mesh)


def _first_bad(losses: np.ndarray, norms: np.ndarray) -> int | None:
    bad = ~(np.isfinite(losses) & np.isfinite(norms))
    return int(np.argmax(bad)) if bad.any() else None


def _restore_or_init(config, mesh, optimizer, manager, workdir: Path) -> tuple[TrainState, bool]:
    """(state, resumed): the latest checkpoint's state, or the seed's initial state."""
    state = _initial_state(config, mesh, optimizer)
    fallback = bool(config.training.get("restore_fallback", False))
    try:
        restored = checkpoints.restore_state(
            manager, state, parallel.replicated(mesh), fallback=fallback
        )
    except Exception:
        manager.close()  # its background threads would otherwise report on exit
        raise
    if restored is None:
        return state, False
    return restored, True


def _log_start(workdir: Path, start: int, resumed: bool, mesh, n_iters: int) -> None:
    directory = checkpoints.checkpoint_dir(workdir) / str(start)
    where = f"Resuming from step {start} (checkpoint {directory})" if resumed else "Starting"
    log.info(
        "%s in %s on %d device(s), %d process(es); %d step(s) to run.",
        where,
        workdir,
        mesh.devices.size,
        jax.process_count(),
        max(n_iters - start, 0),
    )


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What the loop drives: the compiled steps, metrics, checkpoints and the progress bar."""

    mesh: Any
    manager: Any
    train_step: Callable
    evaluate: Callable[[Any, int], float]
    sampler: Callable | None
    writer: MetricsWriter
    bar: Any


@dataclasses.dataclass
class _Progress:
    """Where the run is: its step, last saved step, and the steps and calls it executed."""

    step: int
    last_saved: int | None
    ran: int = 0
    calls: int = 0
    stopped: bool = False


def train(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    score_model: ScoreModel | None = None,
    on_finish: Callable[[TrainState, int, float], None] | None = None,
) -> TrainState:
    """Trains (or resumes) until config.training.n_iters; returns the final state.

    SIGTERM saves the current state and raises TrainingPreempted; SIGINT (Ctrl-C) saves it and
    raises KeyboardInterrupt. Either way a rerun resumes from that checkpoint. `score_model` is
    the config's SDE and network when the caller built them already; `on_finish(state, steps
    run, seconds)` runs when training completes (the CLI's final report)."""
    workdir = Path(workdir)
    t = config.training
    # Orbax reports every file it writes at INFO through absl; keep the console readable.
    logging.getLogger("absl").setLevel(logging.WARNING)
    is_main = jax.process_index() == 0
    mesh = parallel.make_mesh()
    check_training_config(config, mesh.devices.size, pads_batches=True)

    score_model = score_model or build_score_model(config)
    optimizer = get_optimizer(config)
    manager = checkpoints.make_manager(workdir, t.snapshot_freq, int(t.keep_checkpoints))
    state, resumed = _restore_or_init(config, mesh, optimizer, manager, workdir)
    start = int(jax.device_get(state.step.addressable_data(0)))
    if is_main:
        _log_start(workdir, start, resumed, mesh, t.n_iters)
        run_record.warn_if_different(workdir, config)
        if not resumed:  # a resumed run keeps the record of the run that made the workdir
            run_record.record_config(workdir, config)
    parts = _make_parts(config, workdir, score_model, mesh, optimizer, manager, start)
    progress = _Progress(step=start, last_saved=start if resumed else None)
    started = time.perf_counter()
    # The handlers outlive the loop: the final wait for the asynchronous save is covered too.
    with _StopSignal() as stop:
        try:
            state = _run_calls(config, workdir, parts, state, progress, stop)
        finally:
            manager.wait_until_finished()
            manager.close()
            parts.writer.close()
            parts.bar.close()
    # A signal during the final save counts too, except where other processes may not know it.
    if progress.stopped or (stop.raised and jax.process_count() == 1):
        _stopped(stop.name, progress, workdir, is_main)
    if is_main:
        _log_finish(workdir, progress)
    if on_finish is not None:
        on_finish(state, progress.ran, time.perf_counter() - started)
    return state


def _make_parts(config, workdir: Path, score_model: ScoreModel, mesh, optimizer, manager, start):
    """The compiled steps, evaluation, snapshot sampler, metrics writer and progress bar."""
    t = config.training
    loss_fn = make_loss_fn(config, score_model.sde, score_model.model.apply, True)
    return _Parts(
        mesh=mesh,
        manager=manager,
        train_step=make_train_step(config, loss_fn, optimizer, mesh),
        evaluate=_make_evaluate(config, score_model, mesh, start),
        sampler=make_snapshot_sampler(config, score_model) if t.snapshot_sampling else None,
        writer=MetricsWriter(workdir, start_step=start),
        bar=_progress_bar(start, t.n_iters, jax.process_index() == 0),
    )


def _log_finish(workdir: Path, progress: _Progress) -> None:
    log.info(
        "Training finished at step %d after %d step(s) in %d call(s) in this run; "
        "checkpoints in %s.",
        progress.step,
        progress.ran,
        progress.calls,
        checkpoints.checkpoint_dir(workdir),
    )


def _run_calls(config, workdir: Path, parts: _Parts, state, progress: _Progress, stop):
    """Runs the compiled calls from progress.step to n_iters, or until a stop signal, logging,
    evaluating and saving on the way; the state it ends with is saved too."""
    t = config.training
    for n, images in _train_stream(config, parts.mesh, progress.step):
        tic = time.perf_counter()
        state, (losses, norms) = parts.train_step(state, images)
        losses, norms = (
            np.asarray(losses.addressable_data(0)),
            np.asarray(norms.addressable_data(0)),
        )
        first = progress.step
        bad = _first_bad(losses, norms)
        if bad is not None:
            raise TrainingDivergedError(
                _divergence_message(
                    first + bad, losses[bad], norms[bad], progress.last_saved, workdir
                )
            )
        step = progress.step = first + n
        progress.ran, progress.calls = progress.ran + n, progress.calls + 1
        rate = n / max(time.perf_counter() - tic, 1e-9)
        _log_steps(parts.writer, first, losses, norms, t.log_freq)
        parts.bar.update(n)
        parts.bar.set_postfix(loss=f"{losses[-1]:.4g}", steps_per_s=f"{rate:.2f}")
        if step % t.eval_freq == 0:
            parts.writer.write(step, {"eval_loss": parts.evaluate(state.ema_params, step)})
        if step % t.snapshot_freq_for_preemption == 0 or step % t.snapshot_freq == 0:
            _save(parts.manager, state, progress)
        if parts.sampler is not None and step % t.snapshot_freq == 0:
            parts.sampler(state.ema_params, step, workdir)
        if stop.agreed():
            progress.stopped = True
            break
    if progress.last_saved != progress.step:
        _save(parts.manager, state, progress)
    return state


def _save(manager, state: TrainState, progress: _Progress) -> None:
    checkpoints.save_state(manager, state)
    progress.last_saved = progress.step


def _stopped(name: str | None, progress: _Progress, workdir, is_main) -> None:
    """Ends a run stopped by a signal, its state saved: raises KeyboardInterrupt for SIGINT
    (Ctrl-C), TrainingPreempted otherwise."""
    name = name or "stop signal on another process"
    if is_main:
        log.info(
            "%s: saved step %d in %s after %d step(s) in %d call(s) in this run; exiting.",
            name,
            progress.step,
            checkpoints.checkpoint_dir(workdir),
            progress.ran,
            progress.calls,
        )
    if name == "SIGINT":
        raise KeyboardInterrupt(f"SIGINT: saved step {progress.step}")
    where = checkpoints.checkpoint_dir(workdir)
    raise TrainingPreempted(f"{name}: stopped after saving step {progress.step} in {where}")


def _make_evaluate(config, score_model: ScoreModel, mesh, start: int):
    """(EMA parameters, step) -> the held-out loss on the next evaluation batch.

    The batches continue where a run that never stopped would be at `start`, so a resumed run
    logs the same evaluation losses as one that never stopped."""
    loss_fn = make_loss_fn(config, score_model.sde, score_model.model.apply, False)
    eval_step = make_eval_step(config, loss_fn, mesh)
    done = start // config.training.eval_freq
    batches = host_batches(config, "test", config.eval.batch_size, config.seed + 1, done)
    key = jax.random.PRNGKey(config.seed + 2)

    def evaluate(params, step: int) -> float:
        images = parallel.padded_batch_to_global(
            next(batches)["image"], mesh, config.eval.batch_size
        )
        loss = eval_step(params, images, jax.random.fold_in(key, step))
        return float(loss.addressable_data(0))

    return evaluate


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
    return tqdm(initial=start, total=total, disable=not enabled, unit="step", dynamic_ncols=True)
