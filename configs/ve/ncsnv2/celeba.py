"""NCSNv2 on CelebA 64x64: 500 noise levels, annealed Langevin dynamics.

Same values as the official score_sde config ve/ncsnv2/celeba.py.
"""

from configs.architectures import set_ncsnv2
from configs.official import official


def get_config():
    config = official("celeba", "vesde", continuous=False, sampler=("none", "ald"))
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.128
    set_ncsnv2(config, name="ncsnv2_64", num_scales=500, ema_rate=0.999, lr=1e-4)
    return config
