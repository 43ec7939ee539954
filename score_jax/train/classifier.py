"""`score-jax train-classifier`: trains the noise-conditional classifier p_t(y | x).

The objective is the paper's: cross-entropy of the classifier on x_t = a(t) x_0 + std(t) z,
t ~ U(eps, T), for labelled data x_0 scaled as the score model's. The run uses the score
model's machinery unchanged: the config's data stream (resumable at any step), the mesh and a
step written per device under `shard_map` with the noise drawn for the global batch, the
`TrainState` with EMA, Orbax checkpoints in `<workdir>/checkpoints` (resume, SIGTERM) and
`metrics.jsonl`. Inference restores the EMA parameters (`restore_classifier`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from score_jax import checkpoints, parallel
from score_jax.data import get_dataset
from score_jax.models.classifier import get_classifier, init_classifier
from score_jax.objective import make_preprocess
from score_jax.parallel import DATA_AXIS
from score_jax.sde import SDE, batch_broadcast, get_sde
from score_jax.state import TrainState, create_train_state
from score_jax.train.loop import _StopSignal, check_training_config, host_batches
from score_jax.train.metrics import MetricsWriter
from score_jax.train.optimizer import ema_decay, get_optimizer, update_ema

log = logging.getLogger(__name__)


def perturb(sde: SDE, key: jax.Array, x0: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """(x_t [B, ...], std(t) [B]) for t ~ U(eps, T) and x_t ~ p(x_t | x0)."""
    k_t, k_z = jax.random.split(key)
    t = jax.random.uniform(k_t, (x0.shape[0],), x0.dtype, eps, sde.T)
    mean, std = sde.marginal_prob(x0, t)
    return mean + batch_broadcast(std, x0) * jax.random.normal(k_z, x0.shape, x0.dtype), std


def cross_entropy(apply_fn, params, x: jax.Array, std: jax.Array, labels: jax.Array):
    """(mean cross-entropy, accuracy) of the classifier on noisy x [B, ...] with labels [B]."""
    logits = apply_fn({"params": params}, x, std, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def make_classifier_step(config, sde: SDE, apply_fn, optimizer, mesh) -> Callable:
    """jit(state, images [n, B, ...], labels [n, B]) -> (state, (losses, accuracies) [n])."""
    preprocess = make_preprocess(config)
    eps = float(config.classifier.eps)
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))

    def device_update(state: TrainState, x, std, labels):
        (loss, acc), grads = jax.value_and_grad(
            lambda p: cross_entropy(apply_fn, p, x, std, labels), has_aux=True
        )(state.params)
        grads, loss, acc = lax.pmean((grads, loss, acc), DATA_AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step = state.step + 1
        ema = update_ema(state.ema_params, params, ema_decay(config, step))
        state = state.replace(step=step, params=params, ema_params=ema, opt_state=opt_state)
        return state, (loss, acc)

    update = jax.shard_map(
        device_update,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
        out_specs=(P(), P()),
        check_vma=False,
    )

    def one_step(state, batch):
        images, labels = batch
        k_data, k_noise = jax.random.split(jax.random.fold_in(state.rng, state.step))
        x0 = lax.with_sharding_constraint(preprocess(images, k_data), batch_sharded)
        x, std = perturb(sde, k_noise, x0, eps)
        x, std = (lax.with_sharding_constraint(a, batch_sharded) for a in (x, std))
        return update(state, x, std, labels)

    return jax.jit(
        lambda state, images, labels: lax.scan(one_step, state, (images, labels)),
        donate_argnums=(0,),
    )


def _stream(config, mesh, start: int) -> Iterator[tuple[int, jax.Array, jax.Array]]:
    """(n, images [n, B, ...], labels [n, B]) per call, continuing the data at `start`."""
    t = config.training
    batches = host_batches(config, "train", t.batch_size, config.seed, start)
    step = start
    while step < t.n_iters:
        n = min(t.n_jitted_steps, t.n_iters - step)
        chunk = [next(batches) for _ in range(n)]
        images = np.stack([b["image"] for b in chunk])
        labels = np.stack([b["label"] for b in chunk]).astype(np.int32)
        glob = parallel.host_batch_to_global((images, labels), mesh, batch_axis=1)
        yield n, *glob
        step += n


def _start_state(config, mesh, optimizer, manager) -> tuple[TrainState, bool]:
    """(state, resumed): the latest checkpoint's state, or a fresh one, replicated."""
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = init_classifier(init_key, config)["params"]
    state = parallel.replicate(create_train_state(params, optimizer, state_key), mesh)
    restored = checkpoints.restore_state(manager, state, parallel.replicated(mesh))
    return (state, False) if restored is None else (restored, True)


def train_classifier(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Trains (or resumes) the classifier until config.training.n_iters; returns the state."""
    workdir, t = Path(workdir), config.training
    logging.getLogger("absl").setLevel(logging.WARNING)
    mesh = parallel.make_mesh()
    check_training_config(config, mesh.devices.size)
    sde, model, optimizer = get_sde(config), get_classifier(config), get_optimizer(config)
    manager = checkpoints.make_manager(workdir, t.snapshot_freq, int(t.keep_checkpoints))
    state, resumed = _start_state(config, mesh, optimizer, manager)
    step = last_saved = int(jax.device_get(state.step.addressable_data(0)))
    log.info("%s classifier training in %s.", f"Step {step}:" if resumed else "Starting", workdir)
    train_step = make_classifier_step(config, sde, model.apply, optimizer, mesh)
    writer = MetricsWriter(workdir, start_step=step)
    bar = _progress_bar(step, t.n_iters)
    try:
        with _StopSignal() as stop:
            for n, images, labels in _stream(config, mesh, step):
                state, (losses, accs) = train_step(state, images, labels)
                losses, accs = (np.asarray(a.addressable_data(0)) for a in (losses, accs))
                if not np.all(np.isfinite(losses)):
                    raise ValueError(
                        f"Classifier training diverged near step {step + 1}; "
                        f"the last checkpoint is step {last_saved}."
                    )
                step += n
                bar.update(n)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accs[-1]:.2f}")
                if step % t.log_freq < n:
                    writer.write(step, {"train_loss": losses[-1], "train_accuracy": accs[-1]})
                if step % t.eval_freq < n:
                    acc = accuracy_by_time(config, sde, model, state.ema_params, (0.0, 0.5))
                    writer.write(step, {f"test_accuracy_t{k}": v for k, v in acc.items()})
                    log.info("step %d: EMA test accuracy by t: %s", step, acc)
                if step % t.snapshot_freq_for_preemption < n or step % t.snapshot_freq < n:
                    checkpoints.save_state(manager, state)
                    last_saved = step
                if stop.agreed():
                    break
            if last_saved != step:
                checkpoints.save_state(manager, state)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        bar.close()
    log.info("Classifier at step %d; checkpoints in %s.", step, checkpoints.checkpoint_dir(workdir))
    return state


def accuracy_by_time(config, sde: SDE, model, params, times=(0.0,)) -> dict[float, float]:
    """Accuracy of the classifier on the whole test split perturbed to each time in `times`
    (t = 0: clean data)."""
    preprocess = make_preprocess(config)

    @jax.jit
    def correct(params, images, labels, mask, t, key):
        x0 = preprocess(images, key)
        tt = jnp.full((x0.shape[0],), t, x0.dtype)
        mean, std = sde.marginal_prob(x0, tt)
        x = mean + batch_broadcast(std, x0) * jax.random.normal(key, x0.shape, x0.dtype)
        logits = model.apply({"params": params}, x, std, train=False)
        return jnp.sum((jnp.argmax(logits, -1) == labels) & mask)

    data = get_dataset(
        config,
        "test",
        batch_size=config.eval.batch_size,
        shuffle=False,
        seed=0,
        num_epochs=1,
        drop_remainder=False,
        process_count=1,
        process_index=0,
    )
    batches = list(data)
    total = sum(int(b["mask"].sum()) for b in batches)
    result = {}
    for t in times:
        hits = sum(
            int(correct(params, b["image"], b["label"], b["mask"], t, jax.random.PRNGKey(i)))
            for i, b in enumerate(batches)
        )
        result[float(t)] = hits / total
    return result


def restore_classifier(workdir: str | Path, config, step: int | None = None) -> tuple[int, Any]:
    """(step, EMA parameters) of the classifier checkpoint at `step` (default: latest)."""
    steps = checkpoints.list_steps(workdir)
    if not steps:
        raise FileNotFoundError(
            f"No classifier checkpoint in {checkpoints.checkpoint_dir(workdir)}; train one with "
            "`score-jax train-classifier --config CFG --workdir DIR`."
        )
    step = steps[-1] if step is None else step
    target = jax.eval_shape(lambda: init_classifier(jax.random.PRNGKey(0), config))["params"]
    with checkpoints.make_manager(workdir, read_only=True) as manager:
        checkpoints.check_shapes(manager, step, "ema_params", target, "the classifier config")
        sharding = checkpoints._inference_sharding()
        ema = checkpoints._restore_item(manager, step, "ema_params", target, sharding)
    return step, ema


def _progress_bar(start: int, total: int):
    disabled = jax.process_index() != 0
    return tqdm(initial=start, total=total, disable=disabled, unit="step", dynamic_ncols=True)
