"""VP SDE on the 2-D Gaussian mixture (dataset MIXTURE) with the small MLP: trains in seconds.

The data are raw float points, so they are neither centered nor dequantized.
"""

from configs.defaults import get_default_configs, set_sde


def get_config():
    config = get_default_configs()
    set_sde(config, "vpsde", continuous=True, reduce_mean=True)

    training = config.training
    training.batch_size = 128
    training.n_iters = 2000
    training.n_jitted_steps = 10
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq = 1000
    training.snapshot_freq_for_preemption = 500

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"

    config.eval.batch_size = 256

    data = config.data
    data.dataset = "MIXTURE"
    data.centered = False
    data.random_flip = False
    data.uniform_dequantization = False

    model = config.model
    model.name = "mlp"
    model.nf = 128
    model.num_res_blocks = 2
    model.embedding_type = "positional"
    model.scale_by_sigma = False
    model.dropout = 0.0
    model.ema_rate = 0.999

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 100
    optim.grad_clip = 1.0
    return config
