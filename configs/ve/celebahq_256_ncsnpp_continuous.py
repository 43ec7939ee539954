"""NCSN++ on CelebA-HQ 256x256, VE SDE, continuous time.

Same values as the official score_sde config ve/celebahq_256_ncsnpp_continuous.py.
"""

from configs.architectures import set_ncsnpp_256
from configs.official import official


def get_config():
    config = official("lsun", "vesde", continuous=True)
    config.data.dataset = "CelebAHQ"
    config.data.image_size = 256
    set_ncsnpp_256(config)
    config.model.sigma_max = 348
    return config
