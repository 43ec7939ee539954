"""NCSN++ on CIFAR-10 with SMLD (discrete VE noise levels).

Same values as the official score_sde config ve/cifar10_ncsnpp.py.
"""

from configs.architectures import set_ncsnpp
from configs.official import official


def get_config():
    config = official("cifar10", "vesde", continuous=False)
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, embedding_type="positional")
    return config
