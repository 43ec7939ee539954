"""The DDPM network and its converter against the official score_sde code (ddpm_small fixture).

The fixture has one ResBlock per level; the official CIFAR-10 topology (two blocks per level)
under the VP and the VE configs is checked against shipped official fixtures in
tests/test_official_fixtures.py (ddpm_vp/ve_official_topology), which never skip.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REFERENCE, REPO, load_reference
from flax import traverse_util

from score_jax.config import load_config_file
from score_jax.models import get_model
from score_jax.models.convert_ddpm import ddpm_from_pytorch
from score_jax.models.ddpm import sigma_table
from score_jax.models.layers import divide_by_sigma
from score_jax.models.score_fn import get_score_fn
from score_jax.sde import VESDE, VPSDE

# These tests are dominated by XLA:CPU compile time on a shared 2-core machine; skipping LLVM's
# expensive passes halves it and does not change what is computed.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1))


def max_error_ratio(ours, ref) -> float:
    """max|ours - ref| over the port tolerance 1e-5 max|ref| + 1e-6.

    The official float32 output differs from its own float64 run by 6.1e-6 with max|out| 2.1
    (fixture README), so 1e-5 relative is float32 rounding with little room to spare; the 1e-6
    absolute term covers outputs near zero. Below 1 passes.
    """
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours) - ref).max() / (1e-5 * np.abs(ref).max() + 1e-6))


@pytest.fixture(scope="module")
def reference():
    """(config, arrays, converted variables, apply) for the ddpm_small fixture."""
    arrays = load_reference("ddpm_small")
    meta = json.loads((REFERENCE / "ddpm_small.json").read_text())
    config = ml_collections.ConfigDict(meta["config"])
    config.model.dtype = "float32"
    state_dict = {k[len("sd/") :]: v for k, v in arrays.items() if k.startswith("sd/")}
    variables = ddpm_from_pytorch(state_dict, config)
    model = get_model(config)
    return config, arrays, state_dict, variables, model


@pytest.fixture(scope="module")
def ours(reference):
    """Our output with the recorded labels and our VP scores (discrete, continuous), compiled as
    one program (the three share the network evaluation, as the labels are all t * 999)."""
    config, arrays, _, variables, model = reference
    sde = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)

    @jit
    def evaluate(x, labels, t):
        return {
            "out": model.apply(variables, x, labels),
            "score": get_score_fn(sde, model, variables, continuous=False)(x, t),
            "score_vp_continuous": get_score_fn(sde, model, variables, continuous=True)(x, t),
        }

    return evaluate(nhwc(arrays["x"]), jnp.asarray(arrays["labels"]), jnp.asarray(arrays["t"]))


@pytest.mark.parametrize("key", ["out", "score", "score_vp_continuous"])
def test_matches_official(reference, ours, key):
    """Network output, and get_score_fn's VP scores (std from the truncated discrete table, or
    from the continuous marginal), against the official score_sde code."""
    arrays = reference[1]
    assert max_error_ratio(ours[key], nhwc(arrays[key])) < 1.0


def test_bfloat16_compute_is_close_to_float32(reference):
    config, arrays, _, variables, _ = reference
    config_bf16 = ml_collections.ConfigDict(config.to_dict())
    config_bf16.model.dtype = "bfloat16"
    out = jit(get_model(config_bf16).apply)(variables, nhwc(arrays["x"]), arrays["labels"])
    assert out.dtype == jnp.float32
    ref = nhwc(arrays["out"])
    # bfloat16 keeps 8 mantissa bits (relative step 4e-3); ~20 layers deep 2e-2 is the budget.
    error = np.abs(np.asarray(out) - ref).max() / np.abs(ref).max()
    assert error < 2e-2
    assert error > 1e-5  # it really computed in bfloat16


def test_converter_names_every_bad_key(reference):
    config, _, state_dict, _, _ = reference
    broken = dict(state_dict)
    del broken["all_modules.6.NIN_2.W"]
    broken["all_modules.3.Conv_0.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    broken["all_modules.99.Conv_0.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        ddpm_from_pytorch(broken, config)
    message = str(info.value)
    assert "3 problems" in message
    for key in ("all_modules.3.Conv_0.weight", "all_modules.99.Conv_0.bias", "NIN_2/W"):
        assert key in message
    # Where the output is divided by sigmas[labels] (VE configs) the buffer must fit the config.
    config_ve = ml_collections.ConfigDict(config.to_dict())
    config_ve.model.update(scale_by_sigma=True, num_scales=500)
    with pytest.raises(ValueError, match="num_scales=500"):
        ddpm_from_pytorch(state_dict, config_ve)


def test_scale_by_sigma_divides_by_the_sigma_of_the_label_time(reference):
    """VE configs (ve/cifar10_ddpm): labels index the descending SMLD levels, so label l must
    divide by the VE marginal std at t = 1 - l / (N - 1)."""
    config = ml_collections.ConfigDict(reference[0].to_dict())
    config.model.update(sigma_min=0.01, sigma_max=50, num_scales=1000)
    labels = jnp.asarray([0, 731, 999], jnp.int32)
    h = jnp.ones((3, 2, 2, 1))
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    t = 1.0 - labels / (sde.N - 1)
    sigma = np.asarray(sde.marginal_prob(jnp.zeros((3, 1)), t)[1])
    np.testing.assert_allclose(
        divide_by_sigma(h, labels, sigma_table(config))[:, 0, 0, 0], 1 / sigma, rtol=1e-5
    )


def official_config(path: str) -> ml_collections.ConfigDict:
    return load_config_file(REPO / "configs" / path)


def count_params(config: ml_collections.ConfigDict) -> int:
    """Parameter count of DDPM(config) from shapes alone (jax.eval_shape, nothing computed)."""
    size, channels = config.data.image_size, config.data.num_channels
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    shapes = jax.eval_shape(get_model(config).init, jax.random.key(0), x, labels)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


def test_parameter_count_equals_official():
    official = json.loads((REFERENCE / "params.json").read_text())["configs"]["vp/ddpm/cifar10"]
    assert count_params(official_config("vp/ddpm/cifar10.py")) == official["trainable_params"]


def test_unconditional_variant_has_no_time_embedding():
    """model.conditional=False (a NameError in the official code) builds without any Dense."""
    config = official_config("vp/ddpm/cifar10.py")
    config.model.conditional = False
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    shapes = jax.eval_shape(get_model(config).init, jax.random.key(0), x, labels)
    flat = traverse_util.flatten_dict(shapes["params"])
    assert not [path for path in flat if "Dense_0" in path or "temb_dense_0" in path]
    official = json.loads((REFERENCE / "params.json").read_text())["configs"]["vp/ddpm/cifar10"]
    nf = config.model.nf
    # Gone: the two time-MLP Linears (nf -> 4nf -> 4nf) and each ResBlock's Dense_0 (4nf -> C).
    temb_mlp = (nf + 1) * 4 * nf + (4 * nf + 1) * 4 * nf
    block_widths = [leaf.shape[0] for path, leaf in flat.items() if path[-2:] == ("Conv_1", "bias")]
    assert len(block_widths) == 4 * 2 + 2 + 4 * 3  # down, middle and up ResBlocks
    dense = sum((4 * nf + 1) * width for width in block_widths)
    assert count_params(config) == official["trainable_params"] - temb_mlp - dense


def random_params(model, config, seed: int) -> dict:
    """Parameters of the model's shapes drawn as N(0, 0.05^2) (norm scales 1 + that), no init."""
    size, channels = config.data.image_size, config.data.num_channels
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, labels)
    rng = np.random.default_rng(seed)
    params = {
        path: (0.05 * rng.standard_normal(leaf.shape) + (path[-1] == "scale")).astype(np.float32)
        for path, leaf in traverse_util.flatten_dict(shapes["params"]).items()
    }
    return traverse_util.unflatten_dict(params)


def test_forward_backward_jit_at_official_topology():
    """The official CIFAR-10 DDPM (4 levels, 2 blocks, attention at 16) at nf=32, batch 2."""
    config = official_config("vp/ddpm/cifar10.py")
    config.model.nf = 32
    model = get_model(config)
    params = random_params(model, config, 0)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    labels = jnp.asarray([3.0, 700.0])

    @jit
    def loss_and_grad(params, key):
        def loss(p):
            out = model.apply({"params": p}, x, labels, train=True, rngs={"dropout": key})
            return jnp.mean((out - x) ** 2), out

        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, out_a), grads = loss_and_grad(params, jax.random.key(2))
    (_, out_b), _ = loss_and_grad(params, jax.random.key(3))
    assert out_a.shape == x.shape
    flat = traverse_util.flatten_dict(grads)
    assert flat.keys() == traverse_util.flatten_dict(params).keys()
    assert all(
        bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0 for g in flat.values()
    )
    # Dropout (rate 0.1) is active in training: two dropout keys give different outputs.
    assert float(jnp.abs(out_a - out_b).max()) > 1e-3 * float(jnp.abs(out_a).max())


def tiny_config(reference_config) -> ml_collections.ConfigDict:
    """A one-level DDPM on 8x8: every kind of layer, a fraction of the full compile time."""
    config = ml_collections.ConfigDict(reference_config.to_dict())
    config.model.update(ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,))
    config.data.image_size = 8
    return config


def test_remat_traces_forward_and_backward_with_the_same_names(reference):
    """model.remat recomputes blocks in the backward pass (jax.checkpoint: same numbers by
    construction); it must trace with `train` static and keep every parameter path.
    Traced with eval_shape, nothing compiled."""
    config = tiny_config(reference[0])
    config.model.remat = True
    model = get_model(config)
    params = random_params(model, config, 5)
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((2,), jnp.float32)

    def loss(p, x, labels):
        out = model.apply({"params": p}, x, labels, train=True, rngs={"dropout": jax.random.key(0)})
        return jnp.sum(out**2)

    grads = jax.eval_shape(jax.grad(loss), params, x, labels)
    assert jax.tree.map(lambda g: g.shape, grads) == jax.tree.map(np.shape, params)


def test_init_follows_official_scheme(reference):
    """DDPM init: fan_avg uniform variance scaling, zero biases, ~0 conv_out, Conv_1 and NIN_3."""
    config = tiny_config(reference[0])
    x, labels = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,))
    variables = jit(get_model(config).init)(jax.random.key(0), x, labels)
    params = traverse_util.flatten_dict(variables["params"])
    for path, value in params.items():
        if path[-1] in ("bias", "b"):
            assert float(jnp.abs(value).max()) == 0.0, path
    kernel = params[("up_0_block_0", "Conv_0", "kernel")]  # 3x3, 64 -> 32 channels
    fan_avg = 9 * (kernel.shape[2] + kernel.shape[3]) / 2
    # Uniform on +-sqrt(3 / fan_avg) has variance 1 / fan_avg; 18432 draws pin it to ~0.7%.
    np.testing.assert_allclose(float(jnp.var(kernel)) * fan_avg, 1.0, rtol=0.04)
    temb = params[("temb_dense_1", "kernel")]  # 128 -> 128 Linear, default_init(1)
    np.testing.assert_allclose(float(jnp.var(temb)) * 128, 1.0, rtol=0.04)
    # NIN init_scale 0.1; the NIN shortcut of up_0_block_0 maps 64 -> 32: 2048 draws, ~2%.
    nin = params[("up_0_block_0", "NIN_0", "W")]
    np.testing.assert_allclose(float(jnp.var(nin)) * (64 + 32) / 2, 0.1, rtol=0.1)
    zero_init = [
        ("conv_out", "kernel"),
        ("mid_attn", "NIN_3", "W"),
        ("mid_block_0", "Conv_1", "kernel"),
    ]
    for path in zero_init:
        assert float(jnp.abs(params[path]).max()) < 1e-4, path
    assert float(jnp.abs(params[("norm_out", "scale")] - 1).max()) == 0.0
