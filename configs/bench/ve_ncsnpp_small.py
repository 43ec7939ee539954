"""Benchmark config S: ve/cifar10_ncsnpp_continuous with nf=32 and two residual blocks.

The architecture of the official NCSN++ (FIR resampling, residual input pyramid, Fourier
embedding, attention at 16x16) at 2,535,235 parameters, batch 16: the size at which the
performance issue timed the official PyTorch and JAX code on a 2-core CPU.
"""

from configs.bench import shrink_for_cpu_benchmark
from configs.ve.cifar10_ncsnpp_continuous import get_config as get_official_config


def get_config():
    config = get_official_config()
    shrink_for_cpu_benchmark(config)
    return config
