"""Benchmark config P: vp/cifar10_ddpmpp_continuous with nf=32 and two residual blocks.

The official DDPM++ (no FIR, positional embedding, attention at 16x16) at 2,474,787
parameters, batch 16: the size at which the performance issue timed the official PyTorch and
JAX code on a 2-core CPU.
"""

from configs.bench import shrink_for_cpu_benchmark
from configs.vp.cifar10_ddpmpp_continuous import get_config as get_official_config


def get_config():
    config = get_official_config()
    shrink_for_cpu_benchmark(config)
    return config
