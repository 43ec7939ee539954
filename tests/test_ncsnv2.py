"""NCSNv2 networks and their converter.

score_sde_pytorch's NCSNv2 cannot run (its dilated convs are padded by 1, so the shortcut and
residual shapes differ), so its fixtures come from the original code (below). Here: the official
state_dict key list, derived from the official module structure, must account for the official
parameter count and map one-to-one onto our parameters; and our network must equal a forward
pass written with
PyTorch's own primitives (conv2d, instance_norm, max_pool2d, bilinear interpolate) in NCHW on the
same state_dict, with the padding of the NCSNv2 code that trained the official checkpoints.

The original ermongroup/ncsnv2 NCSNv2 / NCSNv2Deeper / NCSNv2Deepest, run on random weights
under score_sde's discrete VE score function, are checked against shipped fixtures in
tests/test_official_fixtures.py (ncsnv2_64/128/256); here their recorded state_dict keys and
shapes must equal official_keys() below.
"""

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REFERENCE, REPO
from flax import traverse_util

from score_jax.config import load_config_file
from score_jax.models import get_model
from score_jax.models.convert_ncsnv2 import ncsnv2_from_pytorch
from score_jax.models.ddpm import sigma_table
from score_jax.models.kernels import XLA
from score_jax.models.ncsnv2 import RefineBlock, ResidualBlock

# These tests are dominated by XLA:CPU compile time on a shared 2-core machine; skipping LLVM's
# expensive passes halves it and does not change what is computed.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

# (official ModuleList name, channel multiplier, dilation) per level, and the RefineBlock names
# from the deepest level up, read off the official models/ncsnv2.py.
OFFICIAL_LEVELS = {
    "ncsnv2_64": [("res1", 1, None), ("res2", 2, None), ("res3", 2, 2), ("res4", 2, 4)],
    "ncsnv2_128": [
        ("res1", 1, None),
        ("res2", 2, None),
        ("res3", 2, None),
        ("res4", 4, 2),
        ("res5", 4, 4),
    ],
    "ncsnv2_256": [
        ("res1", 1, None),
        ("res2", 2, None),
        ("res3", 2, None),
        ("res31", 2, None),
        ("res4", 4, 2),
        ("res5", 4, 4),
    ],
}
OFFICIAL_REFINES = {
    "ncsnv2_64": ["refine1", "refine2", "refine3", "refine4"],
    "ncsnv2_128": ["refine1", "refine2", "refine3", "refine4", "refine5"],
    "ncsnv2_256": ["refine1", "refine2", "refine31", "refine3", "refine4", "refine5"],
}


def jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


def conv_keys(prefix: str, cin: int, cout: int, k: int, bias: bool = True) -> dict:
    keys = {f"{prefix}.weight": (cout, cin, k, k)}
    if bias:
        keys[f"{prefix}.bias"] = (cout,)
    return keys


def norm_keys(prefix: str, c: int) -> dict:
    return {f"{prefix}.{leaf}": (c,) for leaf in ("alpha", "gamma", "beta")}


def residual_block_keys(prefix: str, cin: int, cout: int, down: bool, dilation) -> dict:
    """Keys of the official ResidualBlock (InstanceNorm++, conv shortcut when shapes change)."""
    mid = cin if down else cout
    keys = {**norm_keys(f"{prefix}.normalize1", cin), **conv_keys(f"{prefix}.conv1", cin, mid, 3)}
    keys |= norm_keys(f"{prefix}.normalize2", mid)
    if down and dilation is None:  # ConvMeanPool modules hold their conv as `.conv`
        keys |= conv_keys(f"{prefix}.conv2.conv", mid, cout, 3)
        keys |= conv_keys(f"{prefix}.shortcut.conv", cin, cout, 1)
        return keys
    keys |= conv_keys(f"{prefix}.conv2", mid, cout, 3)
    if down or cin != cout:
        keys |= conv_keys(f"{prefix}.shortcut", cin, cout, 1 if dilation is None else 3)
    return keys


def rcu_keys(prefix: str, c: int, n_blocks: int) -> dict:
    keys = {}
    for i in range(1, n_blocks + 1):
        for j in (1, 2):
            keys |= conv_keys(f"{prefix}.{i}_{j}_conv", c, c, 3, bias=False)
    return keys


def refine_block_keys(prefix: str, in_planes: list[int], features: int, end: bool) -> dict:
    keys = {}
    for i, c in enumerate(in_planes):
        keys |= rcu_keys(f"{prefix}.adapt_convs.{i}", c, 2)
    keys |= rcu_keys(f"{prefix}.output_convs", features, 3 if end else 1)
    if len(in_planes) > 1:
        for i, c in enumerate(in_planes):
            keys |= conv_keys(f"{prefix}.msf.convs.{i}", c, features, 3)
    for i in range(2):
        keys |= conv_keys(f"{prefix}.crp.convs.{i}", features, features, 3, bias=False)
    return keys


def official_keys(name: str, nf: int, channels: int = 3) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the official NCSNv2 state_dict parameters (the `sigmas` buffer aside)."""
    levels = OFFICIAL_LEVELS[name]
    keys = {**conv_keys("begin_conv", channels, nf, 3), **norm_keys("normalizer", nf)}
    keys |= conv_keys("end_conv", nf, channels, 3)
    cin = nf
    for index, (level, mult, dilation) in enumerate(levels):
        keys |= residual_block_keys(f"{level}.0", cin, mult * nf, index > 0, dilation)
        keys |= residual_block_keys(f"{level}.1", mult * nf, mult * nf, False, dilation)
        cin = mult * nf
    deepest_first = list(reversed(levels))
    for i, refine in enumerate(OFFICIAL_REFINES[name]):
        c = deepest_first[i][1] * nf
        features = deepest_first[i + 1][1] * nf if i + 1 < len(levels) else nf
        in_planes = [c] if i == 0 else [c, c]
        keys |= refine_block_keys(refine, in_planes, features, end=i + 1 == len(levels))
    return keys


def ncsnv2_config(name: str, nf: int, image_size: int) -> ml_collections.ConfigDict:
    config = load_config_file(REPO / "configs" / "ve" / "ncsnv2" / "cifar10.py")
    config.model.name = name
    config.model.nf = nf
    config.data.image_size = image_size
    return config


def random_state_dict(keys: dict, config, seed: int) -> dict[str, np.ndarray]:
    """N(0, 0.05^2) weights (InstanceNorm++ scales 1 + that) and the config's sigmas."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in keys.items():
        value = 0.05 * rng.standard_normal(shape)
        if key.endswith((".alpha", ".gamma")):
            value += 1.0
        state[key] = value.astype(np.float32)
    state["sigmas"] = sigma_table(config)
    return state


def test_parameter_count_equals_official():
    config = load_config_file(REPO / "configs" / "ve" / "ncsnv2" / "cifar10.py")
    official = json.loads((REFERENCE / "params.json").read_text())["configs"]["ve/ncsnv2/cifar10"]
    model = get_model(config)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, labels)
    ours = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
    assert ours == official["trainable_params"]
    keys = official_keys(config.model.name, config.model.nf)
    assert sum(int(np.prod(shape)) for shape in keys.values()) == official["trainable_params"]
    assert len(keys) == official["num_parameter_tensors"]


@pytest.mark.parametrize(
    ("name", "image_size"), [("ncsnv2_64", 32), ("ncsnv2_128", 128), ("ncsnv2_256", 256)]
)
def test_converter_places_every_official_key(name, image_size):
    """Each official key lands, in our layout, on its own one of our parameters, and every one of
    our parameters gets a key."""
    config = ncsnv2_config(name, nf=4, image_size=image_size)
    keys = official_keys(name, nf=4)
    state = random_state_dict(keys, config, seed=1)
    params = traverse_util.flatten_dict(ncsnv2_from_pytorch(state, config)["params"])
    assert len(params) == len(keys)
    used = set()
    for key, value in state.items():
        if key == "sigmas":
            continue
        path = converted_path(key)
        assert path not in used, key
        used.add(path)
        expected = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value
        np.testing.assert_array_equal(params[path], expected, err_msg=key)
    assert used == set(params)


def converted_path(key: str) -> tuple[str, ...]:
    """Our path for an official key: list indices join their list's name; weight -> kernel."""
    parts = key.split(".")
    path = []
    for part in parts[:-1]:
        if part.isdigit():
            path[-1] += f"_{part}"
        else:
            path.append(part)
    return (*path, "kernel" if parts[-1] == "weight" else parts[-1])


def test_converter_names_every_bad_key():
    config = ncsnv2_config("ncsnv2_64", nf=4, image_size=32)
    state = random_state_dict(official_keys("ncsnv2_64", nf=4), config, seed=2)
    del state["refine2.msf.convs.1.bias"]
    state["res3.0.shortcut.weight"] = np.zeros((8, 8, 1, 1), np.float32)
    state["res9.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError) as info:
        ncsnv2_from_pytorch(state, config)
    message = str(info.value)
    assert "3 problems" in message
    for text in ("refine2/msf/convs_1/bias", "res3.0.shortcut.weight", "res9.0.conv1.weight"):
        assert text in message
    state = random_state_dict(official_keys("ncsnv2_64", nf=4), config, seed=2)
    config.model.num_scales = 500
    with pytest.raises(ValueError, match="num_scales=500"):
        ncsnv2_from_pytorch(state, config)


def torch_ncsnv2_64(state: dict, x_nchw: np.ndarray, labels: np.ndarray, sigmas) -> np.ndarray:
    """The official NCSNv2 (64) forward, written with PyTorch primitives on the state_dict."""
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    w = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}

    def conv(prefix, h, dilation=1):
        kernel = w[f"{prefix}.weight"]
        pad = dilation * (kernel.shape[-1] // 2)
        return f.conv2d(h, kernel, w.get(f"{prefix}.bias"), padding=pad, dilation=dilation)

    def norm(prefix, h):  # InstanceNorm++ with torch.var's unbiased spread of channel means
        means = h.mean(dim=(2, 3))
        spread = (means - means.mean(-1, keepdim=True)) / torch.sqrt(
            means.var(-1, keepdim=True) + 1e-5
        )
        h = (
            f.instance_norm(h, eps=1e-5)
            + spread[..., None, None] * w[f"{prefix}.alpha"][:, None, None]
        )
        return w[f"{prefix}.gamma"][:, None, None] * h + w[f"{prefix}.beta"][:, None, None]

    def residual(prefix, h, down, dilation):
        d = dilation or 1
        out = conv(f"{prefix}.conv1", f.elu(norm(f"{prefix}.normalize1", h)), d)
        out = f.elu(norm(f"{prefix}.normalize2", out))
        if down and dilation is None:
            out = f.avg_pool2d(conv(f"{prefix}.conv2.conv", out), 2)
            return f.avg_pool2d(conv(f"{prefix}.shortcut.conv", h), 2) + out
        out = conv(f"{prefix}.conv2", out, d)
        return (conv(f"{prefix}.shortcut", h, d) if f"{prefix}.shortcut.weight" in w else h) + out

    def rcu(prefix, h, n_blocks):
        for i in range(1, n_blocks + 1):
            residual_in = h
            for j in (1, 2):
                h = conv(f"{prefix}.{i}_{j}_conv", f.elu(h))
            h = h + residual_in
        return h

    def refine(prefix, xs, size, end):
        hs = [rcu(f"{prefix}.adapt_convs.{i}", x, 2) for i, x in enumerate(xs)]
        if len(hs) > 1:
            hs = [
                f.interpolate(
                    conv(f"{prefix}.msf.convs.{i}", h),
                    size=size,
                    mode="bilinear",
                    align_corners=True,
                )
                for i, h in enumerate(hs)
            ]
        h = f.elu(sum(hs))
        path = h
        for i in range(2):
            path = conv(f"{prefix}.crp.convs.{i}", f.max_pool2d(path, 5, stride=1, padding=2))
            h = path + h
        return rcu(f"{prefix}.output_convs", h, 3 if end else 1)

    with torch.no_grad():
        h = conv("begin_conv", 2 * torch.from_numpy(x_nchw) - 1)
        levels = []
        for index, (name, _, dilation) in enumerate(OFFICIAL_LEVELS["ncsnv2_64"]):
            h = residual(f"{name}.0", h, index > 0, dilation)
            h = residual(f"{name}.1", h, False, dilation)
            levels.append(h)
        ref = refine("refine1", [levels[3]], levels[3].shape[2:], False)
        ref = refine("refine2", [levels[2], ref], levels[2].shape[2:], False)
        ref = refine("refine3", [levels[1], ref], levels[1].shape[2:], False)
        ref = refine("refine4", [levels[0], ref], levels[0].shape[2:], True)
        out = conv("end_conv", f.elu(norm("normalizer", ref)))
        return (out / torch.as_tensor(sigmas)[labels][:, None, None, None].float()).numpy()


@pytest.fixture(scope="module")
def narrow():
    """ncsnv2_64 at nf=8 on 32x32 (levels at 32, 16, 16 dilated 2, 16 dilated 4), converted,
    with inputs and the PyTorch-primitives output."""
    config = ncsnv2_config("ncsnv2_64", nf=8, image_size=32)
    state = random_state_dict(official_keys("ncsnv2_64", nf=8), config, seed=3)
    x = np.random.default_rng(4).uniform(size=(2, 3, 32, 32)).astype(np.float32)
    labels = np.asarray([0, 150])
    ref = torch_ncsnv2_64(state, x, labels, sigma_table(config))
    variables = ncsnv2_from_pytorch(state, config)
    return config, variables, np.transpose(x, (0, 2, 3, 1)), jnp.asarray(labels), nhwc(ref)


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1))


def per_sample_error(out, ref) -> np.ndarray:
    """max|out - ref| / max|ref| per sample: the two samples' outputs differ by
    sigma_0 / sigma_150 = 1e3 in scale, so each is measured against its own."""
    out, ref = np.asarray(out), np.asarray(ref)
    return np.abs(out - ref).max(axis=(1, 2, 3)) / np.abs(ref).max(axis=(1, 2, 3))


def test_matches_pytorch_primitives(narrow):
    config, variables, x, labels, ref = narrow
    out = jit(get_model(config).apply)(variables, x, labels)
    # Float32 rounding over ~60 layers; measured 1e-6.
    assert np.all(per_sample_error(out, ref) < 1e-5)


def test_bfloat16_compute_is_close_to_float32(narrow):
    config, variables, x, labels, ref = narrow
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.dtype = "bfloat16"
    out = jit(get_model(config).apply)(variables, x, labels)
    assert out.dtype == jnp.float32
    # bfloat16 operands (8 mantissa bits) in ~60 convs; float32 accumulation keeps it ~1e-2.
    error = per_sample_error(out, ref)
    assert np.all(error < 2e-2)
    assert np.all(error > 1e-5)  # it really computed in bfloat16


def test_forward_backward_jit(narrow):
    config, variables, x, labels, _ = narrow
    model = get_model(config)

    @jit
    def loss_and_grad(params):
        def loss(p):
            return jnp.mean(model.apply({"params": p}, x, labels, train=True) ** 2)

        return jax.value_and_grad(loss)(params)

    loss, grads = loss_and_grad(variables["params"])
    assert np.isfinite(float(loss))
    flat = traverse_util.flatten_dict(grads)
    assert flat.keys() == traverse_util.flatten_dict(variables["params"]).keys()
    assert all(
        bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0 for g in flat.values()
    )


def test_remat_traces_forward_and_backward_with_the_same_names(narrow):
    """model.remat recomputes the ResidualBlocks in the backward pass (jax.checkpoint: same
    numbers by construction) and keeps every parameter path. Traced with eval_shape only."""
    config, variables, x, labels, _ = narrow
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.remat = True
    model = get_model(config)

    def loss(params):
        return jnp.sum(model.apply({"params": params}, x, labels, train=True) ** 2)

    grads = jax.eval_shape(jax.grad(loss), variables["params"])
    assert jax.tree.map(lambda g: g.shape, grads) == jax.tree.map(jnp.shape, variables["params"])


class ResidualThenRefine(nn.Module):
    """A halving ResidualBlock then a two-input RefineBlock: every kind of NCSNv2 layer."""

    @nn.compact
    def __call__(self, x):
        h = ResidualBlock(16, nn.elu, XLA.conv, "down", None, name="res")(x)
        return RefineBlock(16, nn.elu, XLA.conv, name="refine")([h, h], h.shape[1:3])


def test_init_follows_official_scheme():
    """PyTorch's default Conv2d init (U(+-1/sqrt(fan_in)) for weights and biases) and
    InstanceNorm++ alpha, gamma ~ N(1, 0.02^2), beta = 0. (Initialising the blocks, not the whole
    network, avoids compiling the RNG of 153 tensors; all layers use these same blocks.)"""
    variables = jit(ResidualThenRefine().init)(jax.random.key(0), jnp.zeros((1, 8, 8, 8)))
    params = traverse_util.flatten_dict(variables["params"])
    scales = np.concatenate(
        [np.asarray(v) for p, v in params.items() if p[-1] in ("alpha", "gamma")]
    )
    # 32 draws: the mean is pinned to 4e-3 and the std to ~13%.
    assert scales.size == 32
    assert abs(scales.mean() - 1.0) < 0.015
    np.testing.assert_allclose(scales.std(), 0.02, rtol=0.4)
    assert all(float(jnp.abs(v).max()) == 0.0 for p, v in params.items() if p[-1] == "beta")
    kernels = [v for p, v in params.items() if p[0] == "refine" and p[-1] == "kernel"]
    fan_in = 9 * 16
    # U(+-1/sqrt(fan_in)) has variance 1 / (3 fan_in); 14 kernels of 2304 draws pin it to ~0.5%.
    for kernel in kernels:
        assert kernel.shape == (3, 3, 16, 16)
    variance = float(np.var(np.concatenate([np.ravel(k) for k in kernels])))
    np.testing.assert_allclose(variance * 3 * fan_in, 1.0, rtol=0.03)
    assert ("refine", "crp", "convs_0", "bias") not in params  # RefineNet convs have no bias
    bias = params[("res", "shortcut", "conv", "bias")]  # 1x1 conv from 8 channels: 16 draws
    assert 0.5 < float(jnp.abs(bias).max()) * np.sqrt(8) <= 1.0


@pytest.mark.parametrize("name", ["ncsnv2_64", "ncsnv2_128", "ncsnv2_256"])
def test_official_keys_are_those_of_the_original_code(name):
    """official_keys() (derived above from the module structure) against the state_dict keys
    and shapes of the original ermongroup/ncsnv2 networks, as recorded in the fixtures."""
    meta = json.loads((Path(__file__).resolve().parent / "fixtures" / f"{name}.json").read_text())
    recorded = {key: tuple(shape) for key, shape, _ in meta["weights"]["keys"] if key != "sigmas"}
    assert recorded == official_keys(name, meta["config"]["model"]["nf"])
