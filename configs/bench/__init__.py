"""Small benchmark configs: the official CIFAR-10 configs shrunk to run on a laptop CPU."""


def shrink_for_cpu_benchmark(config) -> None:
    """nf=32, ch_mult (1,2,2,2), two residual blocks, attention at 16x16, batch 16: the size at
    which the performance issue timed the official PyTorch and JAX code on a 2-core CPU."""
    config.training.batch_size = 16
    config.eval.batch_size = 16
    model = config.model
    model.nf = 32
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
