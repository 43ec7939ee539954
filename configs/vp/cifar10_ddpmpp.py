"""DDPM++ on CIFAR-10 with the discrete DDPM objective.

Same values as the official score_sde config vp/cifar10_ddpmpp.py.
"""

from configs.architectures import set_ddpmpp
from configs.official import official


def get_config():
    config = official("cifar10", "vpsde", continuous=False, sampler=("ancestral_sampling", "none"))
    set_ddpmpp(config)
    return config
