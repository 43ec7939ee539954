"""NCSN++ on LSUN bedroom 256x256, VE SDE, continuous time.

Same values as the official score_sde config ve/bedroom_ncsnpp_continuous.py.
"""

from configs.architectures import set_ncsnpp_256
from configs.defaults import set_lsun_category
from configs.official import official


def get_config():
    config = official("lsun", "vesde", continuous=True)
    set_lsun_category(config, "bedroom")
    set_ncsnpp_256(config)
    return config
