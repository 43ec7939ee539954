"""DDPM++ on CIFAR-10, VP SDE, continuous time.

Same values as the official score_sde config vp/cifar10_ddpmpp_continuous.py.
"""

from configs.architectures import set_ddpmpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vpsde", continuous=True, reduce_mean=True)
    set_pc_sampler(config, "euler_maruyama", "none")
    set_ddpmpp(config)
    return config
