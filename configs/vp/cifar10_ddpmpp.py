"""DDPM++ on CIFAR-10 with the discrete DDPM objective.

Same values as the official score_sde config vp/cifar10_ddpmpp.py.
"""

from configs.architectures import set_ddpmpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vpsde", continuous=False, reduce_mean=True)
    set_pc_sampler(config, "ancestral_sampling", "none")
    set_ddpmpp(config)
    return config
