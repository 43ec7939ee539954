"""score_jax.evaluation"""
