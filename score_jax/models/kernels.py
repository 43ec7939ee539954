"""The one backend choice of the networks: which implementation of their primitive ops to run.

'cpu': the XLA:CPU-tuned ops (models/conv.py's custom convolution backward, sums.py's GEMV bias
and time-embedding gradients, norm.py's GroupNorm backward, dropout.py's fused Threefry), which
keep XLA:CPU off its slow loop emitters (benchmarks/README.md). 'xla': plain lax and flax
(lax.conv_general_dilated, `+ bias`, nn.GroupNorm, jax.random.bernoulli dropout) with autodiff's
own gradients, which XLA:GPU and XLA:TPU fuse and send to their own libraries (cuDNN's backward
convolutions, say), and which shard_map can check with check_vma=True. Both have the same
parameters and values (float32 rounding), so checkpoints move freely between them.

`config.model.kernels` picks it: 'auto' (default) is 'cpu' when JAX's default backend is the CPU
and 'xla' otherwise, resolved once when a model or training step is built.
"""

from __future__ import annotations

import jax

from score_jax.models import sums

CHOICES = ("auto", "xla", "cpu")


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


def add_bias(y: jax.Array, bias: jax.Array, kernels: str) -> jax.Array:
    """y [..., K] + bias [K]."""
    return sums.add_bias(y, bias) if kernels == "cpu" else y + bias


def add_per_example(y: jax.Array, v: jax.Array, kernels: str) -> jax.Array:
    """y [N, ..., K] + v [N, K] broadcast over the axes between."""
    if kernels == "cpu":
        return sums.add_per_example(y, v)
    return y + v.reshape(v.shape[0], *([1] * (y.ndim - 2)), v.shape[-1])
