"""NCSN++ on CIFAR-10 with the discrete DDPM objective.

Same values as the official score_sde config vp/cifar10_ncsnpp.py.
"""

from configs.architectures import set_ncsnpp
from configs.official import official


def get_config():
    config = official("cifar10", "vpsde", continuous=False, sampler=("reverse_diffusion", "none"))
    set_ncsnpp(config, scale_by_sigma=False, ema_rate=0.9999, embedding_type="positional")
    return config
