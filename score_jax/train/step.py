"""The data-parallel training step, compiled whole.

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
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from score_jax.losses import Loss
from score_jax.models.kernels import model_kernels
from score_jax.objective import device_loss, draw_inputs, make_preprocess, padding_weights
from score_jax.parallel import DATA_AXIS, padded_batch_size
from score_jax.state import TrainState
from score_jax.train.optimizer import ema_decay, update_ema

Batch = Mapping[str, jax.Array]
StepMetrics = tuple[jax.Array, jax.Array]


def _global_loss_and_grads(
    loss_fn: Loss, params, x, noise, dropout_key, weights, check_vma: bool
) -> tuple[jax.Array, Any]:
    """The global mean loss and its gradient, the same on every device.

    Equal shards, so the mean of shard means is the global mean. Under check_vma=True autodiff
    knows the parameters are replicated and differentiates the pmean itself; under
    check_vma=False (pmap's semantics, needed by the 'cpu' kernels' custom VJPs) each device's
    own gradient is averaged explicitly.
    """

    def this_device_loss(p):
        return device_loss(loss_fn, p, x, noise, dropout_key, weights)

    if check_vma:
        return jax.value_and_grad(lambda p: lax.pmean(this_device_loss(p), DATA_AXIS))(params)
    loss, grads = jax.value_and_grad(this_device_loss)(params)
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
        x, noise, dropout_key = draw_inputs(loss_fn, preprocess, mesh, step_key, images)
        weights = padding_weights(images, real, padded, mesh)
        return update(state, x, noise, dropout_key, *weights)

    def steps(state, images):
        return _run_steps(one_step, state, images, unroll)

    return jax.jit(steps, donate_argnums=(0,))
