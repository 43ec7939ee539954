"""The official model blocks of the config files: NCSN++ / DDPM++, DDPM and NCSNv2.

Each helper writes the complete `config.model` block of its family, so a config file states only
what differs from the family's CIFAR-10 setting (depth, resampling, embedding, EMA rate).
"""

import ml_collections


def _common(model: ml_collections.ConfigDict, name: str, ema_rate: float, scale_by_sigma: bool):
    model.name = name
    model.scale_by_sigma = scale_by_sigma
    model.ema_rate = ema_rate
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True


def set_ncsnpp(
    config: ml_collections.ConfigDict,
    *,
    scale_by_sigma: bool,
    ema_rate: float,
    num_res_blocks: int = 4,
    ch_mult: tuple[int, ...] = (1, 2, 2, 2),
    fir: bool = True,
    progressive: str = "none",
    progressive_input: str = "residual",
    embedding_type: str | None = None,
) -> None:
    """NCSN++ (fir=True, progressive_input='residual') or DDPM++ (fir=False, 'none').

    embedding_type None keeps the dataset default ('fourier').
    """
    model = config.model
    _common(model, "ncsnpp", ema_rate, scale_by_sigma)
    model.ch_mult = ch_mult
    model.num_res_blocks = num_res_blocks
    model.fir = fir
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = progressive
    model.progressive_input = progressive_input
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3
    if embedding_type is not None:
        model.embedding_type = embedding_type


def set_ddpmpp(config: ml_collections.ConfigDict, *, num_res_blocks: int = 4) -> None:
    """DDPM++: the VP / sub-VP network (no FIR, no progressive paths, positional embedding)."""
    set_ncsnpp(
        config,
        scale_by_sigma=False,
        ema_rate=0.9999,
        num_res_blocks=num_res_blocks,
        fir=False,
        progressive_input="none",
        embedding_type="positional",
    )


def set_ncsnpp_256(config: ml_collections.ConfigDict) -> None:
    """The NCSN++ of the 256x256 VE configs (CelebA-HQ, FFHQ, LSUN): seven resolutions."""
    set_ncsnpp(
        config,
        scale_by_sigma=True,
        ema_rate=0.999,
        num_res_blocks=2,
        ch_mult=(1, 1, 2, 2, 2, 2, 2),
        progressive="output_skip",
        progressive_input="input_skip",
    )


def set_ddpm(
    config: ml_collections.ConfigDict,
    *,
    scale_by_sigma: bool,
    ema_rate: float,
    ch_mult: tuple[int, ...] = (1, 2, 2, 2),
) -> None:
    """DDPM (Ho et al.) with two residual blocks per resolution."""
    model = config.model
    _common(model, "ddpm", ema_rate, scale_by_sigma)
    model.ch_mult = ch_mult
    model.num_res_blocks = 2


def set_ncsnv2(
    config: ml_collections.ConfigDict, *, name: str, num_scales: int, ema_rate: float, lr: float
) -> None:
    """NCSNv2 (annealed Langevin dynamics, instance norm++, ELU) and its optimiser."""
    model = config.model
    model.name = name
    model.scale_by_sigma = True
    model.num_scales = num_scales
    model.ema_rate = ema_rate
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"
    optim = config.optim
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = lr
    optim.beta1 = 0.9
    optim.amsgrad = False
    optim.eps = 1e-8
    optim.warmup = 0
    optim.grad_clip = -1.0
