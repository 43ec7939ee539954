"""score_jax.data"""
