"""NCSN++ / DDPM++ against the official PyTorch outputs, FIR resampling, init and bf16 compute.

The fixtures (../shared/reference, README there) hold official weights, inputs and outputs of two
small NCSN++ variants: ncsnpp_ve_small (FIR, Fourier, output_skip / input_skip, scale_by_sigma)
and ddpmpp_vp_small (naive resampling, positional embedding, centered data). The residual input
and output pyramids (FIR and naive), combine_method='cat' and the discrete VE labels are checked
against official values in tests/test_official_fixtures.py; the option sets here only run them.
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
from score_jax.models import get_model, get_score_fn, init_model, layers, upfirdn
from score_jax.models.convert import from_pytorch
from score_jax.models.kernels import XLA
from score_jax.sde import VESDE, VPSDE, SubVPSDE

REPO_CONFIGS = REPO / "configs"


def fixture_config(name: str, **model_changes) -> ml_collections.ConfigDict:
    meta = json.loads((REFERENCE / f"{name}.json").read_text())
    config = ml_collections.ConfigDict(meta["config"])
    config.model.update(model_changes)
    return config


class Fixture:
    """One reference variant: its config, converted variables and a jitted forward."""

    def __init__(self, name: str):
        self.name = name
        self.ref = load_reference(name)
        self.config = fixture_config(name)
        state_dict = {k[3:]: v for k, v in self.ref.items() if k.startswith("sd/")}
        self.variables = from_pytorch(state_dict, self.config)
        self.model = get_model(self.config)
        self.x = jnp.asarray(self.ref["x"].transpose(0, 2, 3, 1))
        self.t = jnp.asarray(self.ref["t"])
        self.labels = jnp.asarray(self.ref["labels"])
        self.outputs = {}

    def forward(self, dtype: str = "float32") -> np.ndarray:
        """Output in NCHW, computed once per compute dtype."""
        if dtype not in self.outputs:
            model = get_model(fixture_config(self.name, dtype=dtype))
            out = jax.jit(model.apply)(self.variables, self.x, self.labels)
            self.outputs[dtype] = np.asarray(out).transpose(0, 3, 1, 2)
        return self.outputs[dtype]

    def score(self, sde) -> np.ndarray:
        score_fn = get_score_fn(sde, self.model, self.variables, train=False, continuous=True)
        return np.asarray(jax.jit(score_fn)(self.x, self.t)).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module", params=["ncsnpp_ve_small", "ddpmpp_vp_small"])
def fixture(request):
    return Fixture(request.param)


def tolerance(reference: np.ndarray) -> float:
    # The README's float32 criterion: the official output itself moves by up to 4.8e-5 of
    # max|out| 44 between thread counts, and sits 5.5e-5 from the float64 forward.
    return 1e-5 * float(np.abs(reference).max()) + 1e-6


def test_forward_matches_official(fixture):
    out = fixture.forward()
    ref = fixture.ref["out"]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= tolerance(ref)


def test_score_fn_matches_official(fixture):
    if fixture.name == "ncsnpp_ve_small":
        scores = {"score": VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)}
    else:
        scores = {
            "score": VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
            "score_subvp": SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
        }
    for key, sde in scores.items():
        ref = fixture.ref[key]
        assert np.abs(fixture.score(sde) - ref).max() <= tolerance(ref), key


def test_bfloat16_compute_close_to_float32(fixture):
    out32 = fixture.forward("float32")
    out16 = fixture.forward("bfloat16")
    assert out16.dtype == np.float32
    # bf16 keeps 8 mantissa bits (relative rounding 4e-3 per op); the budget is 2e-2.
    rel = np.abs(out16 - out32).max() / np.abs(out32).max()
    assert rel < 2e-2, rel
    assert rel > 0  # the bf16 path really ran in lower precision


# ---------------------------------------------------------------- FIR resampling ----------


def upfirdn_reference(x, kernel, up, down, pad):
    """Direct NCHW-free loops of the official definition: stuff zeros, pad, convolve, decimate."""
    b, h, w, c = x.shape
    stuffed = np.zeros((b, h * up, w * up, c))
    stuffed[:, ::up, ::up] = x
    lo, hi = pad
    padded = np.pad(stuffed, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    k = kernel.shape[0]
    flipped = kernel[::-1, ::-1]
    out_h = padded.shape[1] - k + 1
    out = np.zeros((b, out_h, out_h, c))
    for i in range(out_h):
        for j in range(out_h):
            out[:, i, j] = np.einsum("bhwc,hw->bc", padded[:, i : i + k, j : j + k], flipped)
    return out[:, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (1, 2))])
def test_upfirdn2d_matches_definition(up, down, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    # An asymmetric kernel, so a missing flip would show.
    kernel = rng.standard_normal((4, 4)).astype(np.float32)
    got = upfirdn.upfirdn2d(jnp.asarray(x), kernel, up=up, down=down, pad=pad)
    want = upfirdn_reference(x.astype(np.float64), kernel.astype(np.float64), up, down, pad)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1))])
def test_separable_fir_matches_2d_kernel(up, down, pad):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))
    taps_h = np.array([1.0, 2.0, 5.0, 3.0], np.float32)  # asymmetric: a missing flip shows
    taps_w = np.array([0.5, -1.0, 4.0, 2.0], np.float32)
    separable = upfirdn.upfirdn2d(x, (taps_h, taps_w), up=up, down=down, pad=pad)
    full = upfirdn.upfirdn2d(x, np.outer(taps_h, taps_w), up=up, down=down, pad=pad)
    np.testing.assert_allclose(separable, full, atol=1e-5)


def test_fused_conv_resampling_matches_unfused_definition():
    """upsample_conv_2d = stride-2 transposed conv then FIR; conv_downsample_2d = FIR then conv."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 5, 5, 2))
    w = rng.standard_normal((3, 3, 2, 3))
    k = (1, 3, 3, 1)
    kernel = upfirdn.setup_kernel(k)
    # The official op flips w before its transposed conv: out[2i+a, 2j+b] += x[i, j] w[2-a, 2-b].
    t = np.zeros((1, 11, 11, 3))
    flipped = w[::-1, ::-1]
    for i in range(5):
        for j in range(5):
            t[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += np.einsum(
                "c,abcd->abd", x[0, i, j], flipped
            )
    want_up = upfirdn_reference(t, kernel * 4, 1, 1, (1, 1))
    got_up = upfirdn.upsample_conv_2d(jnp.asarray(x, jnp.float32), jnp.asarray(w), k)
    np.testing.assert_allclose(got_up, want_up, atol=1e-4)
    filtered = upfirdn_reference(x, kernel, 1, 1, (2, 2))
    want_down = np.zeros((1, 2, 2, 3))  # 5 -> FIR 6 -> stride-2 VALID 3x3 conv -> 2
    for i in range(2):
        for j in range(2):
            patch = filtered[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            want_down[0, i, j] = np.einsum("abc,abcd->d", patch, w)
    got_down = upfirdn.conv_downsample_2d(jnp.asarray(x, jnp.float32), jnp.asarray(w), k)
    np.testing.assert_allclose(got_down, want_down, atol=1e-4)


def test_fir_resampling_preserves_constants_and_shapes():
    x = jnp.full((1, 8, 8, 2), 3.0)
    up = upfirdn.upsample_2d(x, (1, 3, 3, 1))
    down = upfirdn.downsample_2d(x, (1, 3, 3, 1))
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    # Away from the zero-padded border a normalised FIR filter maps a constant to itself.
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 3.0, rtol=1e-6)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0, rtol=1e-6)
    w = jnp.ones((3, 3, 2, 5)) / 18.0
    assert upfirdn.upsample_conv_2d(x, w, (1, 3, 3, 1)).shape == (1, 16, 16, 5)
    assert upfirdn.conv_downsample_2d(x, w, (1, 3, 3, 1)).shape == (1, 4, 4, 5)
    np.testing.assert_allclose(upfirdn.conv_downsample_2d(x, w, (1, 3, 3, 1))[:, 1:-1, 1:-1], 3.0)


# ------------------------------------------ official init, every option, full topology ------


def tiny_config(**model_changes) -> ml_collections.ConfigDict:
    """The VE fixture's config at 8x8 with two levels and width 8: compiles in seconds."""
    config = fixture_config("ncsnpp_ve_small")
    config.data.image_size = 8
    config.model.update(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
    config.model.update(model_changes)
    return config


def random_params(config, seed: int = 0):
    """Parameters drawn like the fixtures' (0.05 z; GroupNorm scale 1 + 0.05 z; W = 16 z).

    Shapes come from eval_shape, so no initialisation program is compiled.
    """
    shapes = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        z = rng.standard_normal(leaf.shape).astype(np.float32)
        names = [getattr(k, "key", "") for k in path]
        if names[-1] == "scale":
            return jnp.asarray(1 + 0.05 * z)
        if names[0].startswith("GaussianFourierProjection"):
            return jnp.asarray(16 * z)
        return jnp.asarray(0.05 * z)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_official_initialisation():
    """The official initialisers, checked on single blocks (a whole-model init compiles long)."""
    x = jnp.zeros((1, 4, 4, 8))
    temb = jnp.zeros((1, 32))
    block = layers.ResnetBlockBigGANpp(act=jax.nn.silu, kernels=XLA, out_ch=16, init_scale=0.0)
    params = block.init(jax.random.PRNGKey(0), x, temb, False)["params"]
    # default_init: U(-a, a), a = sqrt(3 scale / fan_avg); Conv_0 maps 8 -> 16 channels with
    # 3x3 taps, so fan_avg = 9 (8 + 16) / 2; 1152 draws reach past 0.95 a almost surely.
    k = np.asarray(params["Conv_0"]["kernel"])
    bound = np.sqrt(3.0 / (9 * 24 / 2))
    assert 0.95 * bound < np.abs(k).max() <= bound
    # Output convs with init_scale 0 use scale 1e-10: effectively zero but trainable.
    tiny = np.sqrt(3e-10 / (9 * 16))
    assert 0.95 * tiny < np.abs(params["Conv_1"]["kernel"]).max() <= tiny
    assert np.all(np.asarray(params["Conv_0"]["bias"]) == 0)
    assert np.all(np.asarray(params["Dense_0"]["bias"]) == 0)
    assert np.all(np.asarray(params["GroupNorm_0"]["scale"]) == 1)
    assert params["Conv_2"]["kernel"].shape == (1, 1, 8, 16)  # 1x1 shortcut for 8 -> 16
    attn = layers.AttnBlockpp(XLA, init_scale=0.0).init(jax.random.PRNGKey(1), x)["params"]
    # NIN's default scale is 0.1; NIN_3 (output) has init_scale 0 -> 1e-10.
    nin = np.asarray(attn["NIN_0"]["W"])
    assert 0.9 * np.sqrt(0.3 / 8) < np.abs(nin).max() <= np.sqrt(0.3 / 8)
    assert np.abs(attn["NIN_3"]["W"]).max() <= np.sqrt(3e-10 / 8)
    # Fourier W ~ N(0, 16^2): with 2000 draws the sample std is within 5% of 16.
    fourier = layers.GaussianFourierProjection(embedding_size=2000, scale=16.0)
    w = np.asarray(fourier.init(jax.random.PRNGKey(2), jnp.zeros((1,)))["params"]["W"])
    assert abs(w.std() - 16) < 0.8


def forward_backward(config, params, batch: int = 2):
    """Jitted loss and gradients of mean(out^2) with dropout on; returns (out, grads)."""
    model = get_model(config)
    size, channels = config.data.image_size, config.data.num_channels
    x = jax.random.normal(jax.random.PRNGKey(2), (batch, size, size, channels))
    if config.training.continuous:
        labels = jnp.linspace(0.5, 20.0, batch)
    else:
        labels = jnp.arange(batch) * 7 + 3

    @jax.jit
    def loss_and_grad(params):
        def loss(p):
            rngs = {"dropout": jax.random.PRNGKey(3)}
            out = model.apply({"params": p}, x, labels, train=True, rngs=rngs)
            return jnp.mean(out**2), out

        return jax.value_and_grad(loss, has_aux=True)(params)

    (loss, out), grads = loss_and_grad(params)
    assert out.shape == x.shape and out.dtype == jnp.float32 and np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    if "GaussianFourierProjection_0" in grads:
        # W is a parameter under stop_gradient: present but never trained.
        assert np.all(np.asarray(grads["GaussianFourierProjection_0"]["W"]) == 0)
    return out, grads


OPTION_SETS = {
    # The 256x256 VE configs' network: FIR BigGAN blocks, output_skip / input_skip, Fourier.
    "fir_output_skip_input_skip": {},
    # CIFAR-10 NCSN++: residual input pyramid through the fused FIR conv-downsample.
    "fir_residual_input": dict(progressive="none", progressive_input="residual"),
    # Options no shipped config uses: DDPM blocks with FIR conv resampling (the fused
    # upsample-conv), residual output pyramid, concatenating input skip, no time conditioning.
    "ddpm_blocks_residual_cat": dict(
        resblock_type="ddpm",
        progressive="residual",
        progressive_input="input_skip",
        progressive_combine="cat",
        conditional=False,
        skip_rescale=False,
    ),
}
# Forward passes of these run in the fixture tests; only their backward is left to -m slow.
SLOW_OPTION_SETS = {
    # DDPM++: naive resampling, positional embedding, no progressive paths.
    "ddpmpp": dict(fir=False, progressive_input="none", progressive="none"),
    "no_conv_resampling": dict(
        resblock_type="ddpm", fir=False, resamp_with_conv=False, progressive="output_skip"
    ),
}


@pytest.mark.parametrize(
    "options",
    sorted(OPTION_SETS) + [pytest.param(k, marks=pytest.mark.slow) for k in SLOW_OPTION_SETS],
)
def test_every_option_runs_forward_backward(options):
    changes = {**OPTION_SETS, **SLOW_OPTION_SETS}[options]
    config = tiny_config(**changes)
    out, grads = forward_backward(config, random_params(config))
    # Every parameter but the frozen Fourier W receives gradient.
    flat = traverse_util.flatten_dict(grads, sep="/")
    dead = [k for k, g in flat.items() if not np.any(g) and "GaussianFourier" not in k]
    assert not dead, dead


def test_remat_keeps_parameters_and_output():
    """model.remat recomputes blocks in the backward pass without renaming any parameter."""
    config = tiny_config()
    remat_config = tiny_config(remat=True)
    shapes = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), remat_config))["params"]
    params = random_params(config)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    out, _ = forward_backward(remat_config, params)
    # forward_backward's inputs, through the plain model: same output up to fusion rounding.
    x = jax.random.normal(jax.random.PRNGKey(2), out.shape)
    labels = jnp.linspace(0.5, 20.0, 2)
    rngs = {"dropout": jax.random.PRNGKey(3)}
    plain = jax.jit(lambda p: get_model(config).apply(p, x, labels, train=True, rngs=rngs))
    expected = plain({"params": params})
    assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max()


NCSNPP_CONFIGS = [
    "ve/cifar10_ncsnpp_continuous",
    "ve/cifar10_ncsnpp_deep_continuous",
    "ve/cifar10_ncsnpp",
    "vp/cifar10_ddpmpp_continuous",
    "vp/cifar10_ddpmpp_deep_continuous",
    "vp/cifar10_ddpmpp",
    "vp/cifar10_ncsnpp_continuous",
    "subvp/cifar10_ddpmpp_continuous",
    "ve/celebahq_256_ncsnpp_continuous",
    "ve/ffhq_256_ncsnpp_continuous",
    "ve/church_ncsnpp_continuous",
    "ve/bedroom_ncsnpp_continuous",
]


@pytest.mark.slow  # 1-4 min of XLA compilation each; the option sets above cover every path.
@pytest.mark.parametrize("path", NCSNPP_CONFIGS)
def test_full_topology_forward_backward(path):
    """Each official NCSN++ config at width nf=8, batch 2: one jitted forward + backward."""
    config = load_config_file(REPO_CONFIGS / f"{path}.py")
    config.model.nf = 8
    if config.data.image_size > 64:
        # Keep all seven levels (down to 1x1) while cutting the pixels 16x.
        config.data.image_size = 64
    forward_backward(config, init_model(jax.random.PRNGKey(1), config)["params"])
