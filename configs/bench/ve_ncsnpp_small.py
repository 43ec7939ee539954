"""Benchmark config S: ve/cifar10_ncsnpp_continuous with nf=32 and two residual blocks.

The architecture of the official NCSN++ (FIR resampling, residual input pyramid, Fourier
embedding, attention at 16x16) at 2,535,235 parameters, batch 16: the size at which the
performance issue timed the official PyTorch and JAX code on a 2-core CPU.
"""

from configs.ve.cifar10_ncsnpp_continuous import get_config as get_official_config


def get_config():
    config = get_official_config()
    config.training.batch_size = 16
    config.eval.batch_size = 16
    model = config.model
    model.nf = 32
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    return config
