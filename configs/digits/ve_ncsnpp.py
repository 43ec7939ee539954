"""A small NCSN++ on the built-in 8x8 digits, VE SDE, continuous time: trains on a CPU in minutes.

sigma_max = 5 follows the paper's rule (about the largest distance between two training
images: 4.8 for the digits in [0, 1]); the sampler is the official VE one (reverse diffusion
predictor + Langevin corrector).
"""

from configs.architectures import set_ncsnpp
from configs.defaults import get_default_configs, set_pc_sampler, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vesde", continuous=True)
    set_pc_sampler(config, "reverse_diffusion", "langevin")
    set_ncsnpp(config, scale_by_sigma=True, ema_rate=0.999, num_res_blocks=1, ch_mult=(1, 2))

    training = config.training
    training.batch_size = 64
    training.n_iters = 2000
    training.n_jitted_steps = 1  # XLA:CPU compiles and runs unrolled steps; keep one per call
    training.log_freq = 50
    training.eval_freq = 500
    training.snapshot_freq = 2000
    training.snapshot_freq_for_preemption = 500
    training.snapshot_sampling = False  # the final report draws the samples
    training.final_report = True

    config.eval.batch_size = 99  # 3 batches of the 297 test digits
    config.eval.bpd_repeats = 1

    data = config.data
    data.dataset = "DIGITS"
    data.image_size = 8
    data.num_channels = 1
    data.random_flip = False  # digits are not mirror-symmetric
    data.uniform_dequantization = True  # train on the density the bits/dim measures

    model = config.model
    model.sigma_max = 5  # an int, as the default (50) it overrides
    model.nf = 16
    model.attn_resolutions = (4,)
    model.dropout = 0.0
    model.fir = False  # FIR resampling buys nothing at 8x8 and costs CPU time

    optim = config.optim
    optim.lr = 2e-3
    optim.warmup = 200
    return config
