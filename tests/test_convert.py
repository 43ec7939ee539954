"""Loading official score_sde_pytorch weights: prefixes, EMA checkpoints, clear errors, .pth files.

Uses the ncsnpp_ve_small fixture's state_dict (its keys and shapes are the official ones).
"""

import json

import jax
import ml_collections
import numpy as np
import pytest
from conftest import REFERENCE, load_reference
from flax import traverse_util

from score_jax.models.convert import ConversionError, ema_state_dict, from_pytorch

VARIANT = "ncsnpp_ve_small"


@pytest.fixture(scope="module")
def official():
    ref = load_reference(VARIANT)
    meta = json.loads((REFERENCE / f"{VARIANT}.json").read_text())
    state_dict = {k[3:]: v for k, v in ref.items() if k.startswith("sd/")}
    # Keep the official key order: the EMA shadow list relies on it.
    state_dict = {k: state_dict[k] for k, _, _ in meta["state_dict_keys"]}
    config = ml_collections.ConfigDict(meta["config"])
    return state_dict, config, meta


def flat(variables):
    return traverse_util.flatten_dict(variables["params"], sep="/")


def official_checkpoint(state_dict, meta, step=7):
    """An official checkpoint dict: prefixed model weights and EMA shadow values that differ."""
    order = meta["parameter_order"]
    trainable = [k for k in order if k != "all_modules.0.W"]  # W has requires_grad=False
    shadow = [state_dict[k] + 1.0 for k in trainable]
    model = {f"module.{k}": v for k, v in state_dict.items()}
    ema = {"decay": 0.999, "num_updates": step, "shadow_params": shadow}
    return {"model": model, "ema": ema, "optimizer": {}, "step": step}


def test_module_prefix_is_stripped(official):
    state_dict, config, _ = official
    bare = flat(from_pytorch(state_dict, config))
    prefixed = flat(from_pytorch({f"module.{k}": v for k, v in state_dict.items()}, config))
    assert bare.keys() == prefixed.keys()
    for key in bare:
        np.testing.assert_array_equal(bare[key], prefixed[key])


def test_layouts(official):
    state_dict, config, _ = official
    params = flat(from_pytorch(state_dict, config))
    conv = state_dict["all_modules.3.weight"]  # the first conv3x3, OIHW
    np.testing.assert_array_equal(params["Conv_0/kernel"], conv.transpose(2, 3, 1, 0))
    linear = state_dict["all_modules.1.weight"]  # (out, in)
    np.testing.assert_array_equal(params["Dense_0/kernel"], linear.T)
    np.testing.assert_array_equal(
        params["GaussianFourierProjection_0/W"], state_dict["all_modules.0.W"]
    )


def test_ema_checkpoint_uses_shadow_params(official):
    state_dict, config, meta = official
    # model.parameters() order = state_dict order without the `sigmas` buffer.
    assert meta["parameter_order"] == [k for k, _, _ in meta["state_dict_keys"] if k != "sigmas"]
    checkpoint = official_checkpoint(state_dict, meta)
    raw = flat(from_pytorch(checkpoint, config, use_ema=False))
    ema = flat(from_pytorch(checkpoint, config))
    for key in raw:
        if key == "GaussianFourierProjection_0/W":  # not trained, so not in the EMA
            np.testing.assert_array_equal(ema[key], raw[key])
        else:
            np.testing.assert_allclose(ema[key], raw[key] + 1.0, rtol=1e-6)


def test_ema_shadow_count_mismatch_is_reported(official):
    state_dict, _, meta = official
    checkpoint = official_checkpoint(state_dict, meta)
    checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:-1]
    with pytest.raises(ConversionError, match="223 shadow parameters.*224 trainable"):
        ema_state_dict(checkpoint)


def test_every_mismatch_is_named_in_one_error(official):
    state_dict, config, _ = official
    broken = dict(state_dict)
    del broken["all_modules.4.Conv_0.bias"]
    broken["all_modules.4.Conv_9.weight"] = np.zeros((1,))
    broken["all_modules.5.GroupNorm_0.weight"] = np.zeros((3,))
    with pytest.raises(ConversionError) as err:
        from_pytorch(broken, config)
    message = str(err.value)
    assert "missing key all_modules.4.Conv_0.bias" in message
    assert "unexpected key all_modules.4.Conv_9.weight" in message
    assert "shape mismatch for all_modules.5.GroupNorm_0.weight" in message
    assert "3 problem(s)" in message


def test_wrong_architecture_is_refused(official):
    state_dict, config, _ = official
    wider = ml_collections.ConfigDict(config.to_dict())
    wider.model.nf = 32
    with pytest.raises(ConversionError, match="shape mismatch"):
        from_pytorch(state_dict, wider)
    unknown = ml_collections.ConfigDict(config.to_dict())
    unknown.model.name = "resnet"
    with pytest.raises(ConversionError, match="no converter"):
        from_pytorch(state_dict, unknown)


def test_convert_checkpoint_round_trip(official, tmp_path):
    torch = pytest.importorskip("torch")
    from score_jax.checkpoints import convert_official_checkpoint as convert_checkpoint
    from score_jax.checkpoints import restore_for_inference

    state_dict, config, meta = official
    checkpoint = official_checkpoint(state_dict, meta, step=11)
    as_torch = {
        "model": {k: torch.from_numpy(np.asarray(v)) for k, v in checkpoint["model"].items()},
        "ema": {
            **checkpoint["ema"],
            "shadow_params": [torch.from_numpy(v) for v in checkpoint["ema"]["shadow_params"]],
        },
        "step": 11,
    }
    pth = tmp_path / "checkpoint_11.pth"
    torch.save(as_torch, pth)
    workdir = tmp_path / "work"
    assert convert_checkpoint(config, str(pth), str(workdir)) == 11
    step, ema_params = restore_for_inference(workdir, config)
    assert step == 11
    expected = flat(from_pytorch(checkpoint, config))
    got = traverse_util.flatten_dict(jax.device_get(ema_params), sep="/")
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]))


def test_missing_checkpoint_file(official, tmp_path):
    from score_jax.checkpoints import convert_official_checkpoint as convert_checkpoint

    _, config, _ = official
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert_checkpoint(config, str(tmp_path / "nope.pth"), str(tmp_path / "w"))
