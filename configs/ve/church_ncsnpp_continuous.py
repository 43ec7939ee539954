"""NCSN++ on LSUN church_outdoor 256x256, VE SDE, continuous time.

Same values as the official score_sde config ve/church_ncsnpp_continuous.py.
"""

from configs.architectures import set_ncsnpp_256
from configs.defaults import get_lsun_default_configs, set_lsun_category, set_pc_sampler, set_sde


def get_config():
    config = get_lsun_default_configs()
    set_sde(config, "vesde", continuous=True)
    set_pc_sampler(config, "reverse_diffusion", "langevin")
    set_lsun_category(config, "church_outdoor")
    set_ncsnpp_256(config)
    config.model.sigma_max = 380
    return config
