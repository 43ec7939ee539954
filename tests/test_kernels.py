"""The backend switch (models/kernels.py): the 'cpu' and 'xla' kernels of every network family
have the same parameters, values and gradients; 'xla' programs hold no custom VJP; the training
step runs with shard_map's replication checks on the 'xla' path and gives the same loss curve."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, initial_train_setup

from score_jax import parallel
from score_jax.config import load_config
from score_jax.models import get_model, init_model
from score_jax.models.kernels import model_kernels, resolve_kernels

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
SMALL_NCSNPP = [
    "data.image_size=8",
    "model.nf=8",
    "model.ch_mult=(1, 2)",
    "model.num_res_blocks=1",
    "model.attn_resolutions=(4,)",
]
FAMILIES = {
    # FIR BigGAN blocks, the fused FIR up/down convolutions of the residual input and output
    # pyramids, Fourier features.
    "ncsnpp_fir": (
        "ve/cifar10_ncsnpp_continuous.py",
        [*SMALL_NCSNPP, "model.progressive=residual", "model.progressive_input=residual"],
    ),
    # DDPM++ blocks with naive resampling convs, output skip, cat combine, positional labels.
    "ddpmpp_cat": (
        "vp/cifar10_ddpmpp_continuous.py",
        [
            *SMALL_NCSNPP,
            "model.resblock_type=ddpm",
            "model.progressive=output_skip",
            "model.progressive_input=input_skip",
            "model.progressive_combine=cat",
        ],
    ),
    "ddpm": (
        "vp/ddpm/cifar10.py",
        ["data.image_size=8", "model.nf=32", "model.ch_mult=(1, 2)", "model.num_res_blocks=1"],
    ),
    # Dilated convolutions (2 and 4) and conv-mean-pool shortcuts.
    "ncsnv2": ("ve/ncsnv2/cifar10.py", ["data.image_size=16", "model.nf=8"]),
    "mlp": ("toy/mixture_vp.py", ["model.nf=16", "model.dropout=0.2"]),
}


def family_config(name: str, kernels: str):
    path, overrides = FAMILIES[name]
    return load_config(REPO / "configs" / path, [*overrides, f"model.kernels={kernels}"])


def example_inputs(config, batch: int = 2):
    if config.data.dataset == "MIXTURE":
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, 2))
    else:
        size, channels = config.data.image_size, config.data.num_channels
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, size, size, channels))
    if config.training.sde == "vesde" and not config.training.continuous:
        return x, jnp.array([3, 250])[:batch]
    if config.training.sde == "vesde":
        return x, jnp.array([0.5, 20.0])[:batch]
    return x, jnp.array([100.0, 800.0])[:batch]


def loss_and_grads(config, params, x, labels):
    """(out, d mean(out * r) / d(params, x)) with dropout on; r fixed."""
    model = get_model(config)
    weights = jax.random.normal(jax.random.PRNGKey(2), x.shape)

    def loss(p, x):
        rngs = {"dropout": jax.random.PRNGKey(3)}
        out = model.apply({"params": p}, x, labels, train=True, rngs=rngs)
        return jnp.mean(out * weights), out

    # Differentiation inlines custom VJPs, so look for them in the forward program.
    jaxpr = str(jax.make_jaxpr(loss)(params, x))
    fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    (_, out), grads = jax.jit(fn, compiler_options=FAST_COMPILE)(params, x)
    return out, grads, jaxpr


def assert_close(got, want, what: str, floor: float = 0.0):
    """float32 rounding of a different summation order: 1e-4 of the array's scale, plus `floor`
    for gradients that vanish exactly (a conv bias right before a one-channel-per-group norm)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    allowed = 1e-4 * np.abs(want).max() + floor
    assert np.abs(got - want).max() <= allowed, (what, np.abs(got - want).max(), allowed)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cpu_and_xla_kernels_agree(family):
    cpu_config, xla_config = family_config(family, "cpu"), family_config(family, "xla")
    params = init_model(jax.random.PRNGKey(0), cpu_config)["params"]
    xla_shapes = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), xla_config))["params"]
    # One parameter tree for both: checkpoints move freely between the paths.
    assert jax.tree.structure(params) == jax.tree.structure(xla_shapes)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(lambda s: s.shape, xla_shapes)
    # Non-trivial values everywhere (the zero-ish output inits would hide the last layers).
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    params = treedef.unflatten(
        [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    x, labels = example_inputs(cpu_config)
    out_cpu, grads_cpu, jaxpr_cpu = loss_and_grads(cpu_config, params, x, labels)
    out_xla, grads_xla, jaxpr_xla = loss_and_grads(xla_config, params, x, labels)
    assert "custom_vjp_call" not in jaxpr_xla  # the GPU/TPU path is plain lax and autodiff
    if family != "mlp":  # the MLP has no tuned op but its dropout
        assert "custom_vjp_call" in jaxpr_cpu
    assert_close(out_xla, out_cpu, "output")
    flat_cpu = jax.tree_util.tree_flatten_with_path(grads_cpu)[0]
    floor = 1e-6 * max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_cpu))
    for (path, g_cpu), g_xla in zip(flat_cpu, jax.tree.leaves(grads_xla), strict=True):
        assert_close(g_xla, g_cpu, jax.tree_util.keystr(path), floor)


def test_upsample_conv_is_one_input_dilated_convolution_on_the_xla_path():
    from score_jax.models import upfirdn

    x = jax.random.normal(jax.random.PRNGKey(5), (2, 5, 5, 3))
    w = jax.random.normal(jax.random.PRNGKey(6), (3, 3, 3, 4))
    outs = {}
    for kernels in ("cpu", "xla"):
        up = functools.partial(upfirdn.upsample_conv_2d, k=(1, 3, 3, 1), kernels=kernels)
        grads = jax.grad(lambda x, w, up=up: jnp.sum(up(x, w) ** 2), (0, 1))(x, w)
        outs[kernels] = (up(x, w), grads)
        jaxpr = str(jax.make_jaxpr(up)(x, w))
        assert ("lhs_dilation=(2, 2)" in jaxpr) == (kernels == "xla")
    assert outs["xla"][0].shape == (2, 10, 10, 4)
    for got, want in zip(jax.tree.leaves(outs["xla"]), jax.tree.leaves(outs["cpu"]), strict=True):
        assert_close(got, want, "upsample_conv_2d")


def test_resolve_kernels():
    assert resolve_kernels("auto", backend="cpu") == "cpu"
    assert resolve_kernels("auto", backend="gpu") == "xla"
    assert resolve_kernels("AUTO", backend="tpu") == "xla"
    assert resolve_kernels("xla", backend="cpu") == "xla"
    assert resolve_kernels("cpu", backend="gpu") == "cpu"
    assert model_kernels(family_config("mlp", "auto")) == "cpu"  # this machine runs on the CPU
    with pytest.raises(ValueError, match="config.model.kernels must be one of"):
        resolve_kernels("cudnn")


def train_losses(kernels: str, steps: int = 20) -> np.ndarray:
    config = load_config(
        REPO / "configs/digits/vp_ddpmpp.py",
        ["model.nf=8", "training.batch_size=8", "model.dropout=0.1", f"model.kernels={kernels}"],
    )
    mesh = parallel.make_mesh()
    state, train_step = initial_train_setup(config, mesh)
    images = np.random.default_rng(0).integers(0, 256, (steps, 1, 8, 8, 8, 1), np.uint8)
    losses = []
    for batch in images:
        state, (loss, _) = train_step(state, parallel.host_batch_to_global(batch, mesh, 1))
        losses.append(float(loss.addressable_data(0)[0]))
    return np.asarray(losses)


def test_training_loss_curves_agree():
    """20 data-parallel steps (4 devices) per path; 'xla' runs with check_vma=True."""
    cpu, xla = train_losses("cpu"), train_losses("xla")
    assert cpu[0] != cpu[-1]  # the parameters do move
    # Same data, noise and dropout masks; float32 rounding of the two gradient formulations
    # compounds over 20 Adam updates, to ~1e-5 of the loss here.
    np.testing.assert_allclose(xla, cpu, rtol=1e-3)
