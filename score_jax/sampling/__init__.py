"""score_jax.sampling"""
