"""Deep NCSN++ on CIFAR-10, sub-VP SDE, continuous time.

Same values as the official score_sde config subvp/cifar10_ncsnpp_deep_continuous.py.
"""

from configs.architectures import set_ncsnpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "subvpsde", continuous=True, reduce_mean=True)
    config.training.n_iters = 950001
    set_pc_sampler(config, "euler_maruyama", "none")
    set_ncsnpp(
        config, scale_by_sigma=False, ema_rate=0.9999, num_res_blocks=8, embedding_type="positional"
    )
    return config
