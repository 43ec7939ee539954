"""Shared config defaults: the official score_sde values per dataset, plus this project's keys.

`get_default_configs()` is the official CIFAR-10 default; `get_celeba_default_configs()` and
`get_lsun_default_configs()` change only what the official CelebA and LSUN defaults change.
Keys marked "project" do not exist in the official configs.
"""

import ml_collections


def get_default_configs() -> ml_collections.ConfigDict:
    """The official CIFAR-10 defaults with this project's extra keys."""
    config = ml_collections.ConfigDict()
    config.training = _training_defaults()
    config.sampling = _sampling_defaults()
    config.eval = _eval_defaults()
    config.data = _data_defaults()
    config.model = _model_defaults()
    config.optim = _optim_defaults()
    config.seed = 42
    return config


def _training_defaults() -> ml_collections.ConfigDict:
    training = ml_collections.ConfigDict()
    training.batch_size = 128
    training.n_iters = 1300001
    training.snapshot_freq = 50000
    training.log_freq = 50
    training.eval_freq = 100
    # Extra checkpoints that survive preemption on cloud machines.
    training.snapshot_freq_for_preemption = 10000
    training.snapshot_sampling = True
    training.likelihood_weighting = False
    # project: with likelihood_weighting, draw the diffusion times from the density proportional
    # to g(t)^2 / std(t)^2 and reweight (Song et al. 2021, "Maximum likelihood training of
    # score-based diffusion models"): the same objective, estimated with far less variance.
    training.importance_weighting = False
    training.continuous = True
    training.reduce_mean = False
    # Every config file sets the SDE; this placeholder only lets overrides name the key.
    training.sde = "vesde"
    # project: training steps fused into one jitted call (the official JAX code used 5).
    training.n_jitted_steps = 1
    # project: 'fixed' is the official JAX EMA (ema = r*ema + (1-r)*p); 'warmup' is the
    # PyTorch rule with rate min(r, (1+n)/(10+n)).
    training.ema_rule = "fixed"
    # project: checkpoints kept besides every snapshot_freq-th one (the latest N).
    training.keep_checkpoints = 2
    # project: after the last step, write a sample grid, the test bits/dim and a Gaussian baseline.
    training.final_report = False
    # project: resume from the newest readable checkpoint when the latest cannot be read (the
    # unreadable ones are moved to <workdir>/checkpoints_unreadable/); off: such a run stops.
    training.restore_fallback = False
    return training


def _sampling_defaults() -> ml_collections.ConfigDict:
    sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16
    # project: probability-flow ODE tolerances (sampling.method = "ode"), the official 1e-5.
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    # project: reverse-SDE solver for sampling.method = "sde": euler | heun | sra1.
    sampling.sde_solver = "euler"
    # project: its number of steps; None means the SDE's N (model.num_scales).
    sampling.sde_steps = None
    # project: the fast samplers, sampling.method = "dpm_solver++" (multistep 2M),
    # "dpm_solver" (singlestep 1/2/3S) or "heun" (EDM): steps = score evaluations (NFE).
    sampling.steps = 20
    # project: solver order: dpm_solver++ 1 | 2, dpm_solver 1 | 2 | 3 (heun is order 2).
    sampling.order = 2
    # project: time steps: logsnr | time_uniform | time_quadratic | edm; "default" is logsnr
    # for the DPM-Solvers and edm (sigma^(1/rho) uniform) for heun.
    sampling.schedule = "default"
    sampling.rho = 7.0
    # project: lower-order final steps (DPM-Solver++ below 15 steps; DPM-Solver-fast's split).
    sampling.lower_order_final = True
    # project: EDM's stochastic Heun (s_churn > 0); s_tmin / s_tmax in EDM sigma units.
    sampling.s_churn = 0.0
    sampling.s_tmin = 0.0
    sampling.s_tmax = float("inf")
    sampling.s_noise = 1.0
    return sampling


def _eval_defaults() -> ml_collections.ConfigDict:
    evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.batch_size = 1024
    evaluate.enable_sampling = False
    evaluate.num_samples = 50000
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"
    # project: passes over the bpd split with fresh dequantization noise (official: 5).
    evaluate.bpd_repeats = 5
    # project: divergence estimator of the bpd evaluation: rademacher | gaussian | exact.
    evaluate.bpd_hutchinson = "rademacher"
    # project: .npz of reference Inception statistics ('' = the default file for the dataset).
    evaluate.fid_stats = ""
    # project: converted FID-Inception weights ('' = the default location).
    evaluate.inception_weights = ""
    # project: accept Inception weights other than pytorch-fid's (tests); results say so.
    evaluate.allow_unverified_inception = False
    return evaluate


def _data_defaults() -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict()
    data.dataset = "CIFAR10"
    data.image_size = 32
    data.random_flip = True
    data.centered = False
    data.uniform_dequantization = False
    data.num_channels = 3
    # project: tfds data directory (None = the tfds default).
    data.data_dir = None
    # project: LSUN category ('bedroom', 'church_outdoor'; see set_lsun_category).
    data.category = ""
    # project: image folder ('folder', 'CelebAHQ', 'FFHQ') or .npz file ('npz') to read.
    data.path = ""
    # project: examples of a 'folder'/'npz' dataset held out as its 'test' split (0: test = train).
    data.holdout = 0
    # The official CelebA-HQ/FFHQ TFRecord file (read without TensorFlow; '' = unused).
    data.tfrecords_path = ""
    # project: keep decoded tfds/folder/TFRecord splits in host memory up to this size (MB).
    data.cache_mb = 4096
    # project: the toy Gaussian mixture of dataset 'MIXTURE' (score_jax.toy.GaussianMixture).
    data.mixture = mixture = ml_collections.ConfigDict()
    mixture.means = ((-2.0, 0.0), (2.0, 0.0))
    mixture.stds = (0.5, 0.5)
    mixture.weights = (0.5, 0.5)
    mixture.num_train = 10000
    mixture.num_test = 2000
    return data


def _model_defaults() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.sigma_min = 0.01
    model.sigma_max = 50
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.dropout = 0.1
    model.embedding_type = "fourier"
    # project: compute dtype of activations ('float32' | 'bfloat16'); parameters stay float32.
    model.dtype = "float32"
    # project: rematerialise residual blocks in the backward pass to save memory.
    model.remat = False
    # project: the networks' primitive ops (score_jax/models/kernels.py): 'auto' picks the
    # XLA:CPU-tuned ones ('cpu') on a CPU backend and plain lax/flax ('xla') on GPU and TPU.
    model.kernels = "auto"
    return model


def _optim_defaults() -> ml_collections.ConfigDict:
    optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    # "cosine" decays the lr to 0 at training.n_iters after warmup: short runs end on a
    # quieter network. The official runs keep it constant ("none").
    optim.lr_decay = "none"
    optim.grad_clip = 1.0
    return optim


def get_celeba_default_configs() -> ml_collections.ConfigDict:
    """The official CelebA (64x64) defaults."""
    config = get_default_configs()
    config.sampling.snr = 0.17
    config.eval.begin_ckpt = 1
    config.eval.enable_sampling = True
    config.data.dataset = "CELEBA"
    config.data.image_size = 64
    config.model.sigma_max = 90
    return config


def get_lsun_default_configs() -> ml_collections.ConfigDict:
    """The official LSUN (256x256) defaults, also used for CelebA-HQ and FFHQ at 256."""
    config = get_default_configs()
    config.training.batch_size = 64
    config.training.n_iters = 2400001
    config.training.snapshot_freq_for_preemption = 5000
    config.sampling.snr = 0.075
    config.eval.begin_ckpt = 50
    config.eval.end_ckpt = 96
    config.eval.batch_size = 512
    config.eval.enable_sampling = True
    config.data.dataset = "LSUN"
    config.data.image_size = 256
    config.model.sigma_max = 378
    config.model.num_scales = 2000
    config.model.dropout = 0.0
    return config


def set_sde(
    config: ml_collections.ConfigDict, sde: str, continuous: bool, reduce_mean: bool = False
) -> None:
    """Chooses the SDE and training objective; VP and sub-VP also train on centered data."""
    config.training.sde = sde
    config.training.continuous = continuous
    config.training.reduce_mean = reduce_mean
    if sde in ("vpsde", "subvpsde"):
        config.data.centered = True


def set_pc_sampler(config: ml_collections.ConfigDict, predictor: str, corrector: str) -> None:
    """Predictor-corrector sampling with the given predictor and corrector."""
    config.sampling.method = "pc"
    config.sampling.predictor = predictor
    config.sampling.corrector = corrector


def set_lsun_category(config: ml_collections.ConfigDict, category: str) -> None:
    """An LSUN category ('bedroom', 'church_outdoor')."""
    config.data.category = category
