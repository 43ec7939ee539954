"""Experiment configs: `get_config()` files named as the official score_sde ones."""
