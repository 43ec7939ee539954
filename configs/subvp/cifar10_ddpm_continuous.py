"""The DDPM network on CIFAR-10, sub-VP SDE, continuous time.

Same values as the official score_sde config subvp/cifar10_ddpm_continuous.py.
"""

from configs.architectures import set_ddpm
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "subvpsde", continuous=True, reduce_mean=True)
    set_pc_sampler(config, "euler_maruyama", "none")
    set_ddpm(config, scale_by_sigma=False, ema_rate=0.9999)
    return config
