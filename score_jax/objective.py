"""The objective on a sharded global batch, shared by training and evaluation.

A batch's randomness (dequantization noise, diffusion times, Gaussian noise) is drawn for the
whole global batch from one key and sharded like the batch, so every example's noise is the same
whatever the number of devices; batches the devices cannot split are padded and the padding rows
weighted 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.data import quantization_levels
from score_jax.data.preprocess import get_scaler, to_float
from score_jax.losses import Loss, get_loss_fn
from score_jax.models.kernels import model_kernels
from score_jax.parallel import DATA_AXIS, padded_batch_size
from score_jax.sde import SDE

# preprocess(raw images [b, ...], key) -> float model inputs [b, ...].
Preprocess = Callable[[jax.Array, jax.Array], jax.Array]


def make_loss_fn(config: ml_collections.ConfigDict, sde: SDE, apply_fn, train: bool) -> Loss:
    """The config's objective (continuous DSM, SMLD or DDPM) for a network's apply function."""
    return get_loss_fn(
        sde,
        apply_fn,
        train=train,
        reduce_mean=config.training.reduce_mean,
        continuous=config.training.continuous,
        likelihood_weighting=config.training.likelihood_weighting,
        importance_weighting=config.training.get("importance_weighting", False),
    )


def make_preprocess(config: ml_collections.ConfigDict) -> Preprocess:
    """Raw dataset images -> model inputs: to [0, 1] (dequantized if configured), then scaled."""
    scaler = get_scaler(config)
    dequantize = bool(config.data.uniform_dequantization)
    levels = quantization_levels(config) or 256  # the data's own grid (None: float data)
    return lambda images, key: scaler(to_float(images, key, dequantize, levels))


def draw_inputs(loss_fn: Loss, preprocess: Preprocess, mesh: Mesh, key, images):
    """Model inputs, the loss's noise and a dropout key for a global batch [B, ...]."""
    k_data, k_noise, k_dropout = jax.random.split(key, 3)
    batch_sharded = NamedSharding(mesh, P(DATA_AXIS))
    x = lax.with_sharding_constraint(preprocess(images, k_data), batch_sharded)
    noise = loss_fn.draw_noise(k_noise, x)
    noise = jax.tree.map(lambda a: lax.with_sharding_constraint(a, batch_sharded), noise)
    return x, noise, k_dropout


def device_loss(loss_fn: Loss, params, x, noise, dropout_key, weights=None) -> jax.Array:
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


def padding_weights(images: jax.Array, real: int, padded: int, mesh: Mesh) -> tuple:
    """(row_weights,) for a configured batch the devices cannot split, else () (plain mean)."""
    if padded == real:
        return ()
    if images.shape[0] != padded:
        raise ValueError(
            f"A batch of {real} on {mesh.devices.size} devices runs as {padded} rows (padded); "
            f"got {images.shape[0]} (use parallel.padded_batch_to_global)."
        )
    return (row_weights(real, padded, mesh.devices.size),)


def make_eval_step(
    config: ml_collections.ConfigDict, loss_fn: Loss, mesh: Mesh
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """jit(params, images [B_global, ...], key) -> global mean loss, without gradients."""
    preprocess = make_preprocess(config)
    real = config.eval.batch_size
    padded = padded_batch_size(real, mesh, "eval.batch_size")

    def device_eval(params, x, noise, dropout_key, *weights):
        loss = device_loss(loss_fn, params, x, noise, dropout_key, *weights)
        return lax.pmean(loss, DATA_AXIS)

    mapped = jax.shard_map(
        device_eval,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), *([P(DATA_AXIS)] * (padded != real))),
        out_specs=P(),
        check_vma=model_kernels(config) == "xla",
    )

    def eval_step(params, images, key):
        inputs = draw_inputs(loss_fn, preprocess, mesh, key, images)
        return mapped(params, *inputs, *padding_weights(images, real, padded, mesh))

    return jax.jit(eval_step)
