"""DDPM (Ho et al.) on CIFAR-10 with its discrete objective and ancestral sampling.

Same values as the official score_sde config vp/ddpm/cifar10.py.
"""

from configs.architectures import set_ddpm
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vpsde", continuous=False, reduce_mean=True)
    set_pc_sampler(config, "ancestral_sampling", "none")
    set_ddpm(config, scale_by_sigma=False, ema_rate=0.9999)
    return config
