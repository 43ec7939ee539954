"""Score networks and their adaptation to the score interface `score_fn(x, t)`."""

from score_jax.models.score_fn import get_score_fn, network_score_fn, noise_labels, output_to_score

__all__ = ["get_score_fn", "network_score_fn", "noise_labels", "output_to_score"]
