"""A small DDPM++ on the built-in 8x8 digits, VP SDE, continuous time: trains on a CPU in minutes.

The default run of the README (`score-jax train --config configs/digits/vp_ddpmpp.py --workdir
runs/digits`): after the last step it writes a sample grid and the test-set bits/dim next to a
full-covariance Gaussian baseline (config.training.final_report).
Measured on a 2-core CPU: 4000 steps in 111 s, report 42 s, 2 min 46 s in all; test bits/dim
4.598 +- 0.024 against 6.461 +- 0.066 for the Gaussian.
"""

from configs.architectures import set_ddpmpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde
from configs.digits import set_digits_run


def get_config():
    config = get_default_configs()
    set_sde(config, "vpsde", continuous=True, reduce_mean=True)
    set_pc_sampler(config, "euler_maruyama", "none")
    set_ddpmpp(config, num_res_blocks=1)

    set_digits_run(config, n_iters=4000)
    # Weighting by g(t)^2 makes the loss a bound on -log p: what the bits/dim measure.
    config.training.likelihood_weighting = True

    model = config.model
    model.nf = 16
    model.ch_mult = (1, 2)
    model.attn_resolutions = (4,)
    model.ema_rate = 0.999
    return config
