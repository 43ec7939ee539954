"""Small configs on scikit-learn's 8x8 digits, sharing one data, schedule and evaluation setup."""


def set_digits_run(config, n_iters: int) -> None:
    """The digits data and a CPU-sized schedule: batch 64, one step per compiled call, a final
    report (samples and test bits/dim) instead of periodic snapshots."""
    training = config.training
    training.batch_size = 64
    training.n_iters = n_iters
    # One step per call: each call logs, and fusing steps saves little on a CPU.
    training.n_jitted_steps = 1
    training.log_freq = 50
    training.eval_freq = 500
    training.snapshot_freq = n_iters
    training.snapshot_freq_for_preemption = 500
    training.snapshot_sampling = False  # the final report draws the samples
    training.final_report = True

    # The 297 test digits in 3 batches (96 took 4, a quarter of the last one padding); any batch
    # size fits any number of devices (bits/dim round it up and mask the padding).
    config.eval.batch_size = 100
    config.eval.bpd_repeats = 1
    # `score-jax eval` takes the latest checkpoint, whatever n_iters the run was given.
    config.eval.begin_ckpt = None
    config.eval.end_ckpt = None

    data = config.data
    data.dataset = "DIGITS"
    data.image_size = 8
    data.num_channels = 1
    data.random_flip = False  # digits are not mirror-symmetric
    data.uniform_dequantization = True  # train on the density the bits/dim measures

    config.model.dropout = 0.0
    config.optim.lr = 2e-3
    config.optim.warmup = 200
