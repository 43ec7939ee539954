"""A config's SDE and network, built once per run, and compiled samplers over them.

Training, its snapshots, the final report and the evaluation commands all build a
`ScoreModel` once from the config and pass it down; the network's parameters stay arguments
of every compiled program, so one compilation serves every checkpoint and EMA/raw weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from score_jax import parallel
from score_jax.data import get_inverse_scaler
from score_jax.models import get_model, get_score_fn
from score_jax.sampling import get_sampler
from score_jax.sde import SDE, get_sde

# sample(params, key) -> (samples in data space, NFE).
SampleFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class ScoreModel:
    """The SDE, the network and how its output becomes a score (official rules per SDE)."""

    sde: SDE
    model: nn.Module
    continuous: bool

    def score_fn(self, params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """score_fn(x [B, ...], t [B]) -> score [B, ...] of the network with `params`."""
        return get_score_fn(self.sde, self.model, {"params": params}, continuous=self.continuous)


def build_score_model(config: ml_collections.ConfigDict) -> ScoreModel:
    """The one place a run turns its config into an SDE and a network."""
    return ScoreModel(get_sde(config), get_model(config), bool(config.training.continuous))


def sample_shape(config: ml_collections.ConfigDict, n: int) -> tuple[int, ...]:
    """[n, D] for the MIXTURE points, [n, H, W, C] for images."""
    if config.data.dataset.upper() == "MIXTURE":
        return (n, len(config.data.mixture.means[0]))
    size = config.data.image_size
    return (n, size, size, config.data.num_channels)


def make_sample_fn(
    config: ml_collections.ConfigDict,
    score_model: ScoreModel,
    n: int,
    mesh: jax.sharding.Mesh | None = None,
) -> SampleFn:
    """jit(params, key) -> (n samples in data space (inverse-scaled, not clipped), nfe).

    With a mesh, the batch comes out sharded over its "data" axis (n must divide evenly); the
    noise is drawn as one global array, so the samples equal a one-device run with the key."""
    if mesh is not None and n % mesh.devices.size:
        raise ValueError(
            f"A sampling batch of {n} must be divisible by the number of devices "
            f"({mesh.devices.size})."
        )
    sampler = get_sampler(config, score_model.sde, sample_shape(config, n))
    inverse_scaler = get_inverse_scaler(config)

    def sample(params, key):
        x, nfe = sampler(key, score_model.score_fn(params))
        return inverse_scaler(x), nfe

    if mesh is None:
        return jax.jit(sample)
    return jax.jit(sample, out_shardings=(parallel.data_sharding(mesh), parallel.replicated(mesh)))
