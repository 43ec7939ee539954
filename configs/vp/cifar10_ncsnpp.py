"""NCSN++ on CIFAR-10 with the discrete DDPM objective.

Same values as the official score_sde config vp/cifar10_ncsnpp.py.
"""

from configs.architectures import set_ncsnpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vpsde", continuous=False, reduce_mean=True)
    set_pc_sampler(config, "reverse_diffusion", "none")
    set_ncsnpp(config, scale_by_sigma=False, ema_rate=0.9999, embedding_type="positional")
    return config
