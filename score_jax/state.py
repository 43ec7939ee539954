"""The training state: everything a checkpoint must hold to continue a run exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
    """Step counter, parameters, their EMA, optimizer state and the run's base PRNG key.

    `rng` is a raw uint32 key data array [2]; the key of step n is fold_in(rng, n), so a run
    resumed at any step draws the same noise as one that never stopped.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array


def create_train_state(
    params: Any, optimizer: optax.GradientTransformation, rng: jax.Array
) -> TrainState:
    """The state at step 0: EMA starts equal to the parameters."""
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=params,
        ema_params=jax.tree.map(lambda p: p.copy(), params),
        opt_state=optimizer.init(params),
        rng=_raw_key(rng),
    )


def _raw_key(key: jax.Array) -> jax.Array:
    """uint32 key data, which Orbax and numpy store as a plain array."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key
