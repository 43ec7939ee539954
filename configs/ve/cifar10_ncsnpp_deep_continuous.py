"""Deep NCSN++ (8 blocks per resolution) on CIFAR-10, VE SDE, continuous time.

Same values as the official score_sde config ve/cifar10_ncsnpp_deep_continuous.py.
"""

from configs.architectures import set_ncsnpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vesde", continuous=True)
    config.training.n_iters = 950001
    set_pc_sampler(config, "reverse_diffusion", "langevin")
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, num_res_blocks=8)
    return config
