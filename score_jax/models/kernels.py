"""The one backend choice of the networks: which implementation of their primitive ops to run.

'cpu': the XLA:CPU-tuned ops (models/conv.py's custom convolution backward, sums.py's GEMV bias
and time-embedding gradients, norm.py's GroupNorm backward, dropout.py's fused Threefry whose
mask is stored as bits), which keep XLA:CPU off its slow loop emitters and from recomputing
fused chains (benchmarks/README.md). 'xla': plain lax and flax (lax.conv_general_dilated,
`+ bias`, nn.GroupNorm, nn.Dropout) with autodiff's own gradients, which XLA:GPU and XLA:TPU
fuse and send to their own libraries (cuDNN's backward convolutions, say), and which shard_map
can check with check_vma=True. Both have the same parameters and values (float32 rounding), so
checkpoints move freely between them.

`config.model.kernels` picks it: 'auto' (default) is 'cpu' when JAX's default backend is the CPU
and 'xla' otherwise, resolved once when a model or training step is built. The resolved choice
is a `Kernels` value: the constructors and functions every block receives as a field, as flax's
ResNet example hands its blocks `conv` and `norm`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.models import conv, norm, sums
from score_jax.models.dropout import Dropout

CHOICES = ("auto", "xla", "cpu")
# A Flax module class or a functools.partial of one (flax's examples call it ModuleDef).
ModuleDef = Any
AddFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The primitive ops of one backend choice, handed to every block as one field.

    conv(features, kernel_size, ...): `conv.Conv`'s fields (kernel HWIO, bias);
    norm(num_groups=, epsilon=): GroupNorm with float32 statistics and output (scale, bias);
    dropout(rate, deterministic=): dropout drawing from the 'dropout' rng collection;
    add_bias(y [..., K], b [K]) and add_per_example(y [N, ..., K], v [N, K]): broadcast sums.
    `name` ('cpu' | 'xla') selects the FIR-fused convolutions in upfirdn.py.
    """

    name: str
    conv: ModuleDef
    norm: ModuleDef
    dropout: ModuleDef
    add_bias: AddFn
    add_per_example: AddFn


def _plus(y: jax.Array, bias: jax.Array) -> jax.Array:
    return y + bias


def _plus_per_example(y: jax.Array, v: jax.Array) -> jax.Array:
    return y + v.reshape(v.shape[0], *([1] * (y.ndim - 2)), v.shape[-1])


CPU = Kernels(
    name="cpu",
    conv=functools.partial(conv.Conv, kernels="cpu"),
    norm=norm.GroupNorm,
    dropout=Dropout,
    add_bias=sums.add_bias,
    add_per_example=sums.add_per_example,
)
XLA = Kernels(
    name="xla",
    conv=functools.partial(conv.Conv, kernels="xla"),
    # Two-pass variance in float32, as norm.GroupNorm and PyTorch compute it.
    norm=functools.partial(nn.GroupNorm, dtype=jnp.float32, use_fast_variance=False),
    dropout=nn.Dropout,
    add_bias=_plus,
    add_per_example=_plus_per_example,
)
KERNELS = {"cpu": CPU, "xla": XLA}


def resolve_kernels(choice: str, backend: str | None = None) -> str:
    """'cpu' or 'xla' for a config value in CHOICES; 'auto' follows `backend` (default: JAX's)."""
    choice = str(choice).lower()
    if choice not in CHOICES:
        raise ValueError(f"config.model.kernels must be one of {CHOICES}, got {choice!r}")
    if choice != "auto":
        return choice
    backend = jax.default_backend() if backend is None else backend
    return "cpu" if backend == "cpu" else "xla"


def model_kernels(config) -> str:
    """The resolved kernels of a config's model (config.model.kernels, 'auto' if absent)."""
    return resolve_kernels(config.model.get("kernels", "auto"))


def get_kernels(config) -> Kernels:
    """The `Kernels` of a config's model: CPU or XLA, by `model_kernels(config)`."""
    return KERNELS[model_kernels(config)]
