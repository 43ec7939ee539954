"""The DDPM network trained with SMLD (discrete VE noise levels) on CIFAR-10.

Same values as the official score_sde config ve/cifar10_ddpm.py.
"""

from configs.architectures import set_ddpm
from configs.official import official


def get_config():
    config = official("cifar10", "vesde", continuous=False)
    set_ddpm(config, scale_by_sigma=True, ema_rate=0.999)
    config.model.conv_size = 3
    return config
