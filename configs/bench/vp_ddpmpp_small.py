"""Benchmark config P: vp/cifar10_ddpmpp_continuous with nf=32 and two residual blocks.

The official DDPM++ (no FIR, positional embedding, attention at 16x16) at 2,474,787
parameters, batch 16: the size at which the performance issue timed the official PyTorch and
JAX code on a 2-core CPU.
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_official_config


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
