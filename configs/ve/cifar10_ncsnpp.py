"""NCSN++ on CIFAR-10 with SMLD (discrete VE noise levels).

Same values as the official score_sde config ve/cifar10_ncsnpp.py.
"""

from configs.architectures import set_ncsnpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vesde", continuous=False)
    set_pc_sampler(config, "reverse_diffusion", "langevin")
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, embedding_type="positional")
    return config
