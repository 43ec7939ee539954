"""get_model is the one place that reads the config: bad options fail there, before anything is
traced; a built network no longer depends on the config; model.dtype reaches every network
(the MLP and the classifier ignored it before; the U-Nets' own tests check theirs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from score_jax.config import load_config
from score_jax.models import get_model
from score_jax.models.classifier import get_classifier

MLP_CONFIG = REPO / "configs" / "toy" / "mixture_vp.py"
NCSNPP_CONFIG = REPO / "configs" / "digits" / "ve_ncsnpp.py"


@pytest.mark.parametrize(
    "path, override, message",
    [
        (NCSNPP_CONFIG, "model.progressive=bogus", "config.model.progressive must be one of"),
        (NCSNPP_CONFIG, "model.nonlinearity=tanh", "config.model.nonlinearity must be one of"),
        (NCSNPP_CONFIG, "model.dtype=float16", "config.model.dtype must be one of"),
        (NCSNPP_CONFIG, "model.kernels=cudnn", "config.model.kernels must be one of"),
        (MLP_CONFIG, "model.embedding_type=learned", "config.model.embedding_type must be"),
    ],
)
def test_bad_options_fail_when_the_model_is_built(path, override, message):
    with pytest.raises(ValueError, match=message):
        get_model(load_config(path, [override]))


def test_the_built_network_does_not_read_the_config_again():
    """Changing the config after get_model changes nothing (a network holding the config and
    parsing it in __call__ would follow the change)."""
    config = load_config(MLP_CONFIG, ["model.nf=16", "model.num_res_blocks=1"])
    model = get_model(config)
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (3, 2)), jnp.array([1.0, 300.0, 900.0])
    variables = model.init(jax.random.PRNGKey(0), x, labels)
    before = model.apply(variables, x, labels)
    config.model.embedding_type = "fourier"
    config.model.scale_by_sigma = True
    np.testing.assert_array_equal(model.apply(variables, x, labels), before)


def _relative_error(out: jax.Array, ref: jax.Array) -> float:
    return float(jnp.abs(out - ref).max() / jnp.abs(ref).max())


def test_mlp_honours_model_dtype():
    """bfloat16 operands (8 mantissa bits) through 4 dense layers with float32 accumulation:
    ~1e-2 of the float32 output at most, and not equal to it (it really ran in bfloat16)."""
    overrides = ["model.nf=32", "model.num_res_blocks=1"]
    f32 = get_model(load_config(MLP_CONFIG, overrides))
    bf16 = get_model(load_config(MLP_CONFIG, [*overrides, "model.dtype=bfloat16"]))
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (8, 2)), jnp.linspace(1.0, 999.0, 8)
    variables = jax.jit(f32.init)(jax.random.PRNGKey(0), x, labels)
    ref, out = jax.jit(f32.apply)(variables, x, labels), jax.jit(bf16.apply)(variables, x, labels)
    assert out.dtype == jnp.float32
    assert 1e-5 < _relative_error(out, ref) < 3e-2


def test_classifier_honours_model_dtype():
    """As above for the digits classifier (WRN-10-1: 7 convolutions, 4 dense layers)."""
    config = load_config(REPO / "configs" / "digits" / "classifier.py", [])
    f32 = get_classifier(config)
    config.model.dtype = "bfloat16"
    bf16 = get_classifier(config)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))
    std = jnp.array([0.01, 0.1, 0.5, 1.0])
    variables = jax.jit(f32.init)(jax.random.PRNGKey(0), x, std)
    ref, out = jax.jit(f32.apply)(variables, x, std), jax.jit(bf16.apply)(variables, x, std)
    assert out.dtype == jnp.float32
    assert 1e-5 < _relative_error(out, ref) < 3e-2
