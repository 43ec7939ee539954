"""The DDPM network on CIFAR-10, sub-VP SDE, continuous time.

Same values as the official score_sde config subvp/cifar10_ddpm_continuous.py.
"""

from configs.architectures import set_ddpm
from configs.official import official


def get_config():
    config = official("cifar10", "subvpsde", continuous=True)
    set_ddpm(config, scale_by_sigma=False, ema_rate=0.9999)
    return config
