"""score-jax: score-based generative modelling through SDEs in JAX and Flax."""

from score_jax import xla_cpu

__version__ = "0.1.0"

# Before anything compiles: XLA:CPU's own kernels beat its YNNPACK fusions here (xla_cpu.py).
xla_cpu.prefer_xla_kernels()
