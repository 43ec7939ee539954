"""Parameters are traced arguments of the compiled sampling and likelihood programs: one
compilation serves every checkpoint, and no program embeds the weights as constants."""

import logging
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from score_jax import parallel
from score_jax.config import load_config
from score_jax.evaluation.bpd import make_bpd_step
from score_jax.models import get_model, get_score_fn, init_model
from score_jax.sampling import get_sampler
from score_jax.score_model import build_score_model, make_sample_fn
from score_jax.sde import get_sde

# stablehlo.constant dense<...> : tensor<3x3x8x8xf32>; splat constants (one value) are cheap.
_CONSTANT = re.compile(r"stablehlo\.constant dense<([^>]*)> : tensor<([0-9x]+)x[a-z0-9]+>")


def data_constant_shapes(hlo_text: str) -> set[tuple[int, ...]]:
    """Shapes of the constants in a StableHLO module that hold more than one distinct value."""
    shapes = set()
    for values, shape in _CONSTANT.findall(hlo_text):
        is_splat = not (values.startswith("[") or values.startswith('"0x'))
        if not is_splat:
            shapes.add(tuple(int(d) for d in shape.split("x")))
    return shapes


def weight_shapes(params) -> set[tuple[int, ...]]:
    """Shapes of the parameter leaves big enough to matter (>= 64 values)."""
    return {p.shape for p in jax.tree.leaves(params) if math.prod(p.shape) >= 64}


@pytest.fixture(scope="module")
def toy():
    config = load_config(REPO / "configs/toy/mixture_vp.py", ["model.nf=32", "model.num_scales=20"])
    params_a = init_model(jax.random.PRNGKey(0), config)["params"]
    params_b = jax.tree.map(lambda p: p + 0.1, params_a)
    return config, params_a, params_b


def count_compiles(caplog, fn, *calls) -> int:
    """How many XLA compilations calling fn(*args) for each args tuple in `calls` triggers."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG), jax.log_compiles(True):
        for args in calls:
            jax.block_until_ready(fn(*args))
    return sum("Finished XLA compilation" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method", ["pc", "ode"])
def test_samplers_compile_once_for_two_parameter_sets(toy, caplog, method):
    config, params_a, params_b = toy
    config = config.copy_and_resolve_references()
    config.sampling.method = method
    sample = make_sample_fn(config, build_score_model(config), 8)
    key = jax.random.PRNGKey(1)
    assert count_compiles(caplog, sample, (params_a, key)) >= 1
    assert count_compiles(caplog, sample, (params_b, key), (params_a, key)) == 0
    # The two parameter sets do give different samples: the weights are really used.
    assert not np.allclose(sample(params_a, key)[0], sample(params_b, key)[0])
    hlo = sample.lower(params_a, key).as_text()
    assert not data_constant_shapes(hlo) & weight_shapes(params_a)


def test_closing_over_weights_embeds_them_the_detector_sees_it(toy):
    """The pattern the design forbids, to show the HLO check above can fail."""
    config, params_a, _ = toy
    sde, model = get_sde(config), get_model(config)
    sampler = get_sampler(config, sde, (8, 2))
    score_fn = get_score_fn(sde, model, {"params": params_a})  # concrete weights in a closure
    hlo = jax.jit(lambda key: sampler(key, score_fn)).lower(jax.random.PRNGKey(1)).as_text()
    assert data_constant_shapes(hlo) & weight_shapes(params_a)


def test_likelihood_step_compiles_once_for_two_parameter_sets(toy, caplog):
    config, params_a, params_b = toy
    sde, model = get_sde(config), get_model(config)
    mesh = parallel.make_mesh()
    step = make_bpd_step(
        lambda p: get_score_fn(sde, model, {"params": p}),
        sde,
        mesh,
        scaler=lambda x: x,
        offset=0.0,
        hutchinson="exact",
    )
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 2))
    ids, mask = jnp.arange(8, dtype=jnp.int32), jnp.ones(8, bool)
    args = (x, ids, mask, jax.random.PRNGKey(3), 0)
    assert count_compiles(caplog, step, (params_a, *args)) >= 1
    assert count_compiles(caplog, step, (params_b, *args)) == 0
    hlo = step.lower(params_a, *args).as_text()
    assert not data_constant_shapes(hlo) & weight_shapes(params_a)
