"""DDPM (Ho et al.) on CIFAR-10 with its discrete objective and ancestral sampling.

Same values as the official score_sde config vp/ddpm/cifar10.py.
"""

from configs.architectures import set_ddpm
from configs.official import official


def get_config():
    config = official("cifar10", "vpsde", continuous=False, sampler=("ancestral_sampling", "none"))
    set_ddpm(config, scale_by_sigma=False, ema_rate=0.9999)
    return config
