"""The data-parallel training and evaluation steps, compiled whole.

A step's randomness (dequantization noise, diffusion times and Gaussian noise) is drawn for the
global batch from fold_in(rng, step), outside the per-device code, and sharded like the batch:
with JAX's partitionable threefry each device generates only its rows, and every example's noise
is the same whether 1 or 64 devices share the batch, so K steps on 4 devices equal K steps on 1.
The update itself is written for one device and mapped over the mesh axis "data" with
`jax.shard_map` under `jax.jit`; gradients and losses are `pmean`-ed. `n_jitted_steps` steps run
per call, and the state buffers are donated. (Dropout masks are drawn per device, so runs with
dropout > 0 are equal in distribution, not bitwise, across device counts.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.data.preprocess import get_scaler, to_float
from score_jax.losses import Loss, get_loss_fn
from score_jax.models.kernels import model_kernels
from score_jax.parallel import DATA_AXIS, padded_batch_size
from score_jax.sde import SDE
from score_jax.state import TrainState
from score_jax.train.optimizer import ema_decay, update_ema

Batch = Mapping[str, jax.Array]
# preprocess(raw images [b, ...], key) -> float model inputs [b, ...].
Preprocess = Callable[[jax.Array, jax.Array], jax.Array]
StepMetrics = tuple[jax.Array, jax.Array]


def make_loss_fn(config: ml_collections.ConfigDict, sde: SDE, apply_fn, train: bool) -> Loss:
    """The config's objective (continuous DSM, SMLD or DDPM) for a network's apply function."""
    return get_loss_fn(
        sde,
        apply_fn,
        train=train,
        reduce_mean=config.training.reduce_mean,
        continuous=config.training.continuous,
        likelihood_weighting=config.training.likelihood_weighting,
    )


def make_preprocess(config: ml_collections.ConfigDict) -> Preprocess:
    """Raw dataset images -> model inputs: to [0, 1] (dequantized if configured), then scaled."""
    scaler = get_scaler(config)
    dequantize = bool(config.data.uniform_dequantization)
    return lambda images, key: scaler(to_float(images, key, dequantize))


def _draw_inputs(loss_fn: Loss, preprocess: Preprocess, mesh: Mesh, key, images):
    """Model inputs, the loss's noise and a dropout key for a global batch [B, ...]."""
    k_data, k_noise, k_dropout = jax.random.split(key, 3)
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))
    x = lax.with_sharding_constraint(preprocess(images, k_data), batch_sharded)
    noise = loss_fn.draw_noise(k_noise, x)
    noise = jax.tree.map(lambda a: lax.with_sharding_constraint(a, batch_sharded), noise)
    return x, noise, k_dropout


def _device_loss(loss_fn: Loss, params, x, noise, dropout_key, weights=None) -> jax.Array:
    """This device's mean loss; its dropout key is made distinct per device.

    With `weights` [B_device] (0 for padding rows, n_devices / B_real for real ones) it is the
    weighted sum instead, whose pmean is the mean over the real rows of the global batch."""
    dropout_key = jax.random.fold_in(dropout_key, lax.axis_index(DATA_AXIS))
    loss, aux = loss_fn.compute(params, {"image": x}, noise, dropout_key)
    return loss if weights is None else jnp.sum(aux["per_example"] * weights)


def row_weights(real_rows: int, padded_rows: int, n_devices: int) -> jax.Array:
    """[padded_rows] weights of a batch whose last rows are padding: n_devices / real_rows for
    the real rows, 0 for the padding."""
    scale = n_devices / real_rows
    return jnp.where(jnp.arange(padded_rows) < real_rows, scale, 0.0).astype(jnp.float32)


def _weights_of(images: jax.Array, real: int, padded: int, mesh: Mesh) -> tuple:
    """(row_weights,) for a configured batch the devices cannot split, else () (plain mean)."""
    if padded == real:
        return ()
    if images.shape[0] != padded:
        raise ValueError(
            f"A batch of {real} on {mesh.devices.size} devices runs as {padded} rows (padded); "
            f"got {images.shape[0]} (use parallel.padded_batch_to_global)."
        )
    return (row_weights(real, padded, mesh.devices.size),)


def _global_loss_and_grads(
    loss_fn: Loss, params, x, noise, dropout_key, weights, check_vma: bool
) -> tuple[jax.Array, Any]:
    """The global mean loss and its gradient, the same on every device.

    Equal shards, so the mean of shard means is the global mean. Under check_vma=True autodiff
    knows the parameters are replicated and differentiates the pmean itself; under
    check_vma=False (pmap's semantics, needed by the 'cpu' kernels' custom VJPs) each device's
    own gradient is averaged explicitly.
    """

    def device_loss(p):
        return _device_loss(loss_fn, p, x, noise, dropout_key, weights)

    if check_vma:
        return jax.value_and_grad(lambda p: lax.pmean(device_loss(p), DATA_AXIS))(params)
    loss, grads = jax.value_and_grad(device_loss)(params)
    return lax.pmean(loss, DATA_AXIS), lax.pmean(grads, DATA_AXIS)


def device_update(
    config: ml_collections.ConfigDict,
    loss_fn: Loss,
    optimizer: optax.GradientTransformation,
    check_vma: bool = False,
) -> Callable[..., tuple[TrainState, StepMetrics]]:
    """(state, x [B_device, ...], noise, dropout key) -> (state after one update, metrics).

    Loss and gradient norm are global (the same on every device)."""

    def update(state: TrainState, x, noise, dropout_key, weights=None):
        loss, grads = _global_loss_and_grads(
            loss_fn, state.params, x, noise, dropout_key, weights, check_vma
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_step = state.step + 1
        ema = update_ema(state.ema_params, params, ema_decay(config, new_step))
        new_state = state.replace(step=new_step, params=params, ema_params=ema, opt_state=opt_state)
        return new_state, (loss, optax.tree.norm(grads))

    return update


def _run_steps(one_step, state: TrainState, images: jax.Array, unroll: bool):
    """Applies one_step to images[0], images[1], ... in one program; stacks the metrics."""
    if not unroll:
        return lax.scan(one_step, state, images)
    metrics = []
    for i in range(images.shape[0]):
        state, step_metrics = one_step(state, images[i])
        metrics.append(step_metrics)
    return state, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)


def make_train_step(
    config: ml_collections.ConfigDict,
    loss_fn: Loss,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    unroll: bool = False,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, StepMetrics]]:
    """jit(state, images [n_steps, B_global, ...]) -> (state, (losses, grad norms) [n_steps]).

    `images` is sharded over "data" along axis 1; `state` is replicated and donated. The steps
    run through `lax.scan` (compiled once, whatever n_steps), or unrolled if `unroll`. A scan
    costs nothing on CPU either, as the networks' convolutions have canonical gradients
    (`models.conv`): config P (batch 16, K=2) 370 ms per step scanned vs 392 ms unrolled, run
    back to back, and 22 s to compile vs 32 s.
    """
    preprocess = make_preprocess(config)
    # The 'cpu' kernels' custom VJPs need check_vma=False (pmap's semantics); plain lax and
    # flax ('xla', the GPU/TPU default) run with shard_map's replication checks on.
    check_vma = model_kernels(config) == "xla"
    real = config.training.batch_size
    padded = padded_batch_size(real, mesh)
    update = jax.shard_map(
        device_update(config, loss_fn, optimizer, check_vma),
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), *([P(DATA_AXIS)] * (padded != real))),
        out_specs=(P(), P()),
        check_vma=check_vma,
    )

    def one_step(state: TrainState, images: jax.Array):
        step_key = jax.random.fold_in(state.rng, state.step)
        x, noise, dropout_key = _draw_inputs(loss_fn, preprocess, mesh, step_key, images)
        weights = _weights_of(images, real, padded, mesh)
        return update(state, x, noise, dropout_key, *weights)

    def steps(state, images):
        return _run_steps(one_step, state, images, unroll)

    return jax.jit(steps, donate_argnums=(0,))


def make_eval_step(
    config: ml_collections.ConfigDict, loss_fn: Loss, mesh: Mesh
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """jit(params, images [B_global, ...], key) -> global mean loss, without gradients."""
    preprocess = make_preprocess(config)
    real = config.eval.batch_size
    padded = padded_batch_size(real, mesh, "eval.batch_size")

    def device_eval(params, x, noise, dropout_key, *weights):
        loss = _device_loss(loss_fn, params, x, noise, dropout_key, *weights)
        return lax.pmean(loss, DATA_AXIS)

    mapped = jax.shard_map(
        device_eval,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), *([P(DATA_AXIS)] * (padded != real))),
        out_specs=P(),
        check_vma=model_kernels(config) == "xla",
    )

    def eval_step(params, images, key):
        inputs = _draw_inputs(loss_fn, preprocess, mesh, key, images)
        return mapped(params, *inputs, *_weights_of(images, real, padded, mesh))

    return jax.jit(eval_step)
