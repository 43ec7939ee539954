"""DDPM++ on CIFAR-10, sub-VP SDE, continuous time.

Same values as the official score_sde config subvp/cifar10_ddpmpp_continuous.py.
"""

from configs.architectures import set_ddpmpp
from configs.official import official


def get_config():
    config = official("cifar10", "subvpsde", continuous=True)
    set_ddpmpp(config)
    return config
