"""Deep NCSN++ (8 blocks per resolution) on CIFAR-10, VE SDE, continuous time.

Same values as the official score_sde config ve/cifar10_ncsnpp_deep_continuous.py.
"""

from configs.architectures import set_ncsnpp
from configs.official import official


def get_config():
    config = official("cifar10", "vesde", continuous=True, deep=True)
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, num_res_blocks=8)
    return config
