"""Orbax checkpoints of the training state under `<workdir>/checkpoints/<step>/`.

Each checkpoint holds four items: `params`, `ema_params`, `opt_state` and `extra` (step, rng),
so inference restores only `ema_params` and a converted official checkpoint needs only the two
parameter items. Saves are asynchronous and atomic (Orbax writes to a temporary folder and
renames it), and every process of a multi-host run takes part. The last `keep` checkpoints are
kept, plus every one whose step is a multiple of `training.snapshot_freq`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Sharding, SingleDeviceSharding

from score_jax.errors import first_line
from score_jax.models import init_model
from score_jax.models.convert import read_official_checkpoint
from score_jax.parallel import make_mesh, replicated
from score_jax.state import TrainState

ITEMS = ("params", "ema_params", "opt_state", "extra")
DEFAULT_KEEP = 2


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "checkpoints"


def make_manager(
    workdir: str | Path, snapshot_freq: int = 0, keep: int = DEFAULT_KEEP, read_only: bool = False
) -> ocp.CheckpointManager:
    """A manager that keeps the latest `keep` checkpoints and every `snapshot_freq`-th step."""
    policies = ocp.checkpoint_managers
    keepers = [policies.LatestN(keep)]
    if snapshot_freq > 0:
        keepers.append(policies.EveryNSteps(snapshot_freq))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keepers),
        enable_async_checkpointing=not read_only,
        create=not read_only,
        read_only=read_only,
    )
    # Handlers named up front let a fresh manager read metadata before any restore.
    handlers = {name: ocp.StandardCheckpointHandler() for name in ITEMS}
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def list_steps(workdir: str | Path) -> list[int]:
    """Steps of the finished checkpoints in `workdir`, ascending ([] when there are none)."""
    if not checkpoint_dir(workdir).is_dir():
        return []
    with make_manager(workdir, read_only=True) as manager:
        return sorted(manager.all_steps())


def save_state(manager: ocp.CheckpointManager, state: TrainState) -> None:
    """Starts an asynchronous save of `state` at its step (returns once arrays are copied)."""
    step = int(jax.device_get(state.step))
    manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            ema_params=ocp.args.StandardSave(state.ema_params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            extra=ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
        ),
        force=True,
    )


def save_inference_checkpoint(
    workdir: str | Path, step: int, params: Any, ema_params: Any | None = None
) -> None:
    """Writes a parameters-only checkpoint (e.g. converted official weights) that
    `restore_for_inference` reads; training cannot resume from it."""
    ema_params = params if ema_params is None else ema_params
    with make_manager(workdir) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), ema_params=ocp.args.StandardSave(ema_params)
            ),
            force=True,
        )
        manager.wait_until_finished()


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


class CheckpointMismatchError(ValueError):
    """A readable checkpoint that does not fit: another model's, or parameters only."""


def check_shapes(
    manager: ocp.CheckpointManager, step: int, item: str, target: Any, what: str
) -> None:
    """Raises ValueError naming every parameter whose stored shape differs from `target`'s."""
    stored = manager.item_metadata(step)[item]
    stored = getattr(stored, "tree", stored)
    stored_shapes = {
        _path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(stored)
    }
    target_shapes = {
        _path_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(target)
    }
    problems = []
    for name in sorted(set(stored_shapes) | set(target_shapes)):
        got, want = stored_shapes.get(name), target_shapes.get(name)
        if got != want:
            got_s = "absent" if got is None else str(got)
            want_s = "absent" if want is None else str(want)
            problems.append(f"{name}: checkpoint {got_s}, {what} {want_s}")
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; ... ({len(problems)} in all)" if len(problems) > 8 else ""
        )
        raise CheckpointMismatchError(
            f"The checkpoint at step {step} in {manager.directory} does not match {what} "
            f"({len(problems)} parameter(s) differ): {shown}. Use a fresh --workdir or the config "
            "the checkpoint was trained with."
        )


def _abstract(tree: Any, sharding: Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _restore_item(manager, step: int, item: str, target: Any, sharding: Sharding) -> Any:
    restored = manager.restore(
        step,
        args=ocp.args.Composite(**{item: ocp.args.StandardRestore(_abstract(target, sharding))}),
    )[item]
    # Orbax may hand back plain tuples for optax's named tuples; rebuild the target's structure.
    return jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(restored))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (corrupt or incomplete); the message says which one,
    what is wrong, and which older checkpoints are intact."""


def unreadable_message(directory, step: int, problem: str, older: list[int]) -> str:
    """One paragraph for a user: the broken checkpoint, the problem, what is left to resume."""
    if older:
        remedy = (
            f"The older checkpoint(s) {older} are untouched: rerun with "
            "--config.training.restore_fallback=True to resume from the newest readable one (the "
            f"unreadable ones are then moved to {Path(directory).parent / UNREADABLE}/, not "
            "deleted)."
        )
    else:
        remedy = "There is no older checkpoint to resume from."
    return f"Checkpoint step {step} in {directory} cannot be read ({problem}). {remedy}"


def _check_resumable(manager: ocp.CheckpointManager, step: int) -> None:
    """Refuses a parameters-only checkpoint, and names a training checkpoint's missing items."""
    metadata = manager.item_metadata(step)
    present = [item for item in ITEMS if item in metadata and metadata[item] is not None]
    if present == ["params", "ema_params"]:
        raise CheckpointMismatchError(
            f"The checkpoint at step {step} in {manager.directory} holds parameters only "
            "(e.g. converted weights) and cannot resume training; use a fresh --workdir."
        )
    missing = [item for item in ITEMS if item not in present]
    if missing:
        raise _Unreadable(f"incomplete: {', '.join(missing)} missing")


class _Unreadable(Exception):
    """Internal: a checkpoint's files are missing or damaged."""


def _restore_training_state(manager, step: int, target: TrainState, sharding) -> TrainState:
    check_shapes(manager, step, "params", target.params, "the config's model")
    _check_resumable(manager, step)
    extra = _restore_item(
        manager, step, "extra", {"step": target.step, "rng": target.rng}, sharding
    )
    return TrainState(
        step=extra["step"],
        params=_restore_item(manager, step, "params", target.params, sharding),
        ema_params=_restore_item(manager, step, "ema_params", target.ema_params, sharding),
        opt_state=_restore_item(manager, step, "opt_state", target.opt_state, sharding),
        rng=extra["rng"],
    )


def _try_restore(manager, step: int, target: TrainState, sharding) -> TrainState | str:
    """The state at `step`, or a description of why its files cannot be read. A checkpoint of
    another model or a parameters-only one raises instead: those are not damage."""
    try:
        return _restore_training_state(manager, step, target, sharding)
    except CheckpointMismatchError:
        raise
    except _Unreadable as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 -- Orbax and tensorstore raise many kinds
        return first_line(err)


def restore_state(
    manager: ocp.CheckpointManager,
    target: TrainState,
    sharding: Sharding,
    step: int | None = None,
    fallback: bool = False,
) -> TrainState | None:
    """The state saved at `step` (default: latest) laid out like `target`, or None if none.

    An unreadable checkpoint raises CheckpointError; with `fallback` (and no explicit step) the
    newest readable older one is used instead and the unreadable ones are moved out of the way
    (`set_aside`), so that training can save those steps again."""
    steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
    for i, candidate in enumerate(steps):
        result = _try_restore(manager, candidate, target, sharding)
        if isinstance(result, TrainState):
            if i:
                set_aside(manager, steps[:i])
            return result
        older = sorted(steps[i + 1 :])
        if not (fallback and older):
            raise CheckpointError(unreadable_message(manager.directory, candidate, result, older))
        logging.warning("Checkpoint step %d cannot be read (%s); trying older.", candidate, result)
    return None


UNREADABLE = "checkpoints_unreadable"


def set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Moves the folders of `steps` to <workdir>/checkpoints_unreadable/ (process 0; every
    process waits) and makes the manager forget them."""
    directory = Path(manager.directory)
    if jax.process_index() == 0:
        target = directory.parent / UNREADABLE
        target.mkdir(exist_ok=True)
        for step in steps:
            destination = target / f"{step}.{time.strftime('%Y%m%d-%H%M%S')}"
            (directory / str(step)).rename(destination)
            logging.warning("Moved unreadable checkpoint step %d to %s.", step, destination)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("score_jax_set_aside_checkpoints")
    manager.reload()


def _inference_sharding() -> Sharding:
    if jax.process_count() == 1:
        return SingleDeviceSharding(jax.local_devices()[0])

    return replicated(make_mesh())


def restore_for_inference(
    workdir: str | Path, config: ml_collections.ConfigDict, step: int | None = None
) -> tuple[int, Any]:
    """(step, EMA parameters) of the checkpoint at `step` (default: latest) in `workdir`."""
    steps = list_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"No checkpoint found in {checkpoint_dir(workdir)}.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(
            f"No checkpoint for step {step} in {checkpoint_dir(workdir)}; found steps {steps}."
        )
    target = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))["params"]
    with make_manager(workdir, read_only=True) as manager:
        try:
            check_shapes(manager, step, "ema_params", target, "the config's model")
            return step, _restore_item(manager, step, "ema_params", target, _inference_sharding())
        except CheckpointMismatchError:
            raise
        except Exception as err:  # noqa: BLE001 -- Orbax and tensorstore raise many kinds
            problem, directory = first_line(err), manager.directory
    older = [s for s in steps if s < step]
    where = f" Older checkpoints: {older} (choose one with --step)." if older else ""
    raise CheckpointError(
        f"Checkpoint step {step} in {directory} cannot be read ({problem}).{where}"
    )


def convert_official_checkpoint(
    config: ml_collections.ConfigDict, checkpoint: str | Path, workdir: str | Path
) -> int:
    """Converts an official .pth into our checkpoint under `workdir` (`score-jax convert`);
    returns its step. Raw and EMA weights are both written (a bare state_dict as both)."""
    step, params, ema_params = read_official_checkpoint(config, checkpoint)
    save_inference_checkpoint(workdir, step, params, ema_params)
    print(f"Converted {checkpoint} (step {step}) into {checkpoint_dir(workdir)}.")
    return step
