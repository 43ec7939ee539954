"""Deep DDPM++ (8 blocks per resolution) on CIFAR-10, VP SDE, continuous time.

Same values as the official score_sde config vp/cifar10_ddpmpp_deep_continuous.py.
"""

from configs.architectures import set_ddpmpp
from configs.official import official


def get_config():
    config = official("cifar10", "vpsde", continuous=True, deep=True)
    set_ddpmpp(config, num_res_blocks=8)
    return config
