"""A small NCSN++ on the built-in 8x8 digits, VE SDE, continuous time: trains on a CPU in minutes.

sigma_max = 5 follows the paper's rule (about the largest distance between two training
images: 4.8 for the digits in [0, 1]); the sampler is the official VE one (reverse diffusion
predictor + Langevin corrector).
"""

from configs.architectures import set_ncsnpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde
from configs.digits import set_digits_run


def get_config():
    config = get_default_configs()
    set_sde(config, "vesde", continuous=True)
    set_pc_sampler(config, "reverse_diffusion", "langevin")
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, num_res_blocks=1, ch_mult=(1, 2))

    set_digits_run(config, n_iters=2000)

    model = config.model
    model.sigma_max = 5  # an int, as the default (50) it overrides
    model.nf = 16
    model.attn_resolutions = (4,)
    model.fir = False  # FIR resampling buys nothing at 8x8 and costs CPU time
    return config
