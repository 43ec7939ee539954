"""The skeleton every official score_sde config shares: dataset defaults, SDE, PC sampler.

An official config is four choices and a network: the dataset's defaults (CIFAR-10, CelebA at
64x64, or the 256x256 LSUN set, also used for CelebA-HQ and FFHQ), the SDE and whether its time
is continuous, the PC sampler (each SDE has the official default below; the discrete VP and the
NCSNv2 configs name theirs), and the network (`configs/architectures.py`). A config file calls
`official(...)` with its choices, then sets its network and whatever else it alone changes.
"""

import ml_collections

from configs.defaults import (
    get_celeba_default_configs,
    get_default_configs,
    get_lsun_default_configs,
    set_pc_sampler,
    set_sde,
)

DATASET_DEFAULTS = {
    "cifar10": get_default_configs,
    "celeba": get_celeba_default_configs,
    "lsun": get_lsun_default_configs,
}
# (predictor, corrector) of the official configs of each SDE, unless a config names its own.
DEFAULT_SAMPLERS = {
    "vesde": ("reverse_diffusion", "langevin"),
    "vpsde": ("euler_maruyama", "none"),
    "subvpsde": ("euler_maruyama", "none"),
}
DEEP_N_ITERS = 950001  # the deep (8 blocks per resolution) CIFAR-10 models train longer


def official(
    dataset: str,
    sde: str,
    *,
    continuous: bool,
    sampler: tuple[str, str] | None = None,
    deep: bool = False,
) -> ml_collections.ConfigDict:
    """The dataset's defaults with `sde` and its PC sampler (DEFAULT_SAMPLERS unless given).

    Every official VP and sub-VP config averages the loss over dimensions (reduce_mean); the VE
    ones sum it. `deep` sets the longer schedule of the deep models (the network is the file's).
    """
    config = DATASET_DEFAULTS[dataset]()
    set_sde(config, sde, continuous=continuous, reduce_mean=sde != "vesde")
    set_pc_sampler(config, *(sampler or DEFAULT_SAMPLERS[sde]))
    if deep:
        config.training.n_iters = DEEP_N_ITERS
    return config
