"""Deep NCSN++ on CIFAR-10, sub-VP SDE, continuous time.

Same values as the official score_sde config subvp/cifar10_ncsnpp_deep_continuous.py.
"""

from configs.architectures import set_ncsnpp
from configs.official import official


def get_config():
    config = official("cifar10", "subvpsde", continuous=True, deep=True)
    set_ncsnpp(
        config, scale_by_sigma=False, ema_rate=0.9999, num_res_blocks=8, embedding_type="positional"
    )
    return config
