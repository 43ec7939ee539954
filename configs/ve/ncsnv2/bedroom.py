"""NCSNv2 on LSUN bedroom 128x128: 1086 noise levels, annealed Langevin dynamics.

Same values as the official score_sde config ve/ncsnv2/bedroom.py.
"""

from configs.architectures import set_ncsnv2
from configs.defaults import set_lsun_category
from configs.official import official


def get_config():
    # The official file misspells the key (`continuouse`) and so keeps continuous=True, which NCSNv2
    # cannot use (it indexes its noise levels); the intended discrete setting is used here.
    config = official("lsun", "vesde", continuous=False, sampler=("none", "ald"))
    config.training.batch_size = 128
    config.sampling.n_steps_each = 3
    config.sampling.snr = 0.095
    set_lsun_category(config, "bedroom")
    config.data.image_size = 128
    set_ncsnv2(config, name="ncsnv2_128", num_scales=1086, ema_rate=0.9999, lr=1e-4)
    config.model.sigma_max = 190
    config.model.sigma_min = 0.01
    return config
