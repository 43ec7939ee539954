"""score_jax.train"""
