"""NCSN++ on CelebA 64x64 with SMLD (discrete VE noise levels).

Same values as the official score_sde config ve/celeba_ncsnpp.py.
"""

from configs.architectures import set_ncsnpp
from configs.official import official


def get_config():
    config = official("celeba", "vesde", continuous=False)
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, embedding_type="positional")
    config.model.sigma_begin = 90
    return config
