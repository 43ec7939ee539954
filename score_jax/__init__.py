"""score-jax: score-based generative modelling through SDEs in JAX and Flax."""

__version__ = "0.1.0"
