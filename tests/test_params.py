"""Our configs build networks with exactly the official parameter counts (params.json).

Counts come from `jax.eval_shape` of `init_model`, so nothing is computed. We compare with
`all_nn_parameters`, which counts the Fourier projection's W (a parameter under stop_gradient,
like ours); for configs without a Fourier embedding it equals `trainable_params`.
"""

import json

import jax
import ml_collections
import pytest
from conftest import REFERENCE, REPO

from score_jax.config import load_config_file
from score_jax.models import MODELS, count_params, init_model


def reference_params() -> dict:
    path = REFERENCE / "params.json"
    if not path.is_file():
        pytest.skip(f"reference fixture not found: {path}")
    return json.loads(path.read_text())


def official_configs() -> list[str]:
    path = REFERENCE / "params.json"
    return sorted(json.loads(path.read_text())["configs"]) if path.is_file() else []


def parameter_count(config: ml_collections.ConfigDict) -> int:
    shapes = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))
    return count_params(shapes["params"])


def require_model(name: str) -> None:
    if name not in MODELS:
        pytest.skip(f"model {name!r} is not registered in score_jax.models.MODELS yet")


@pytest.mark.parametrize("path", official_configs())
def test_official_config_parameter_count(path):
    expected = reference_params()["configs"][path]
    config = load_config_file(REPO / "configs" / f"{path}.py")
    require_model(config.model.name)
    assert parameter_count(config) == expected["all_nn_parameters"]


@pytest.mark.parametrize("path", official_configs())
def test_official_config_values(path):
    """The values the official run recorded for each config, key by key."""
    expected = reference_params()["configs"][path]
    config = load_config_file(REPO / "configs" / f"{path}.py")
    for key, value in expected["model"].items():
        ours = config.model[key]
        ours = list(ours) if isinstance(ours, tuple | list) else ours
        assert ours == value, f"model.{key}: ours {ours!r}, official {value!r}"
    for section in ("training", "data", "sampling"):
        for key, value in expected[section].items():
            assert config[section][key] == value, f"{section}.{key}"


@pytest.mark.parametrize("variant", ["ncsnpp_ve_small", "ddpmpp_vp_small", "ddpm_small"])
def test_fixture_variant_parameter_count(variant):
    expected = reference_params()["small_fixture_variants"][variant]
    meta = json.loads((REFERENCE / f"{variant}.json").read_text())
    config = ml_collections.ConfigDict(meta["config"])
    require_model(config.model.name)
    assert parameter_count(config) == expected["all_nn_parameters"]
    # Only NCSN++'s Fourier embedding holds the untrained W (nf values).
    fourier = config.model.name == "ncsnpp" and config.model.embedding_type == "fourier"
    frozen = expected["all_nn_parameters"] - expected["trainable_params"]
    assert frozen == (config.model.nf if fourier else 0)
