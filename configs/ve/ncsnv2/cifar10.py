"""NCSNv2 on CIFAR-10: 232 noise levels, annealed Langevin dynamics.

Same values as the official score_sde config ve/ncsnv2/cifar10.py.
"""

from configs.architectures import set_ncsnv2
from configs.official import official


def get_config():
    config = official("cifar10", "vesde", continuous=False, sampler=("none", "ald"))
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.176
    set_ncsnv2(config, name="ncsnv2_64", num_scales=232, ema_rate=0.999, lr=1e-4)
    return config
