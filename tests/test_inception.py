"""FID Inception against pytorch-fid's network on the reference fixture (recipe weights)."""

import importlib.util
import json

import jax
import numpy as np
import pytest
import torch
from conftest import REPO, load_reference

from score_jax.evaluation import inception

_spec = importlib.util.spec_from_file_location(
    "make_inception_weights", REPO / "scripts" / "make_inception_weights.py"
)
make_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_weights)

# The fixture's float32 runs (1 vs 2 threads, oneDNN on/off) differ from float64 by <= 9e-7
# relative; any real architecture bug moves pool3 by >= 5e-3 (fixture's bug_sensitivity).
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def spec(reference_dir):
    return json.loads((reference_dir / "fid_inception.json").read_text())


@pytest.fixture(scope="module")
def recipe(spec):
    return make_weights.recipe_state_dict(spec)


@pytest.fixture(scope="module")
def variables(recipe):
    return inception.from_pytorch(recipe)


@pytest.fixture(scope="module")
def reference():
    return load_reference("fid_inception")


@pytest.fixture(scope="module")
def trunk():
    """One compiled network body for every test: batches of two preprocessed images."""
    model = inception.FIDInception()
    return jax.jit(lambda v, x: model.apply(v, x, method=inception.FIDInception.from_preprocessed))


def _rel(ours, ref):
    return np.abs(np.asarray(ours, np.float64) - ref).max() / np.abs(ref).max()


def test_recipe_weights_regenerate_exactly(spec, recipe):
    entries = {e["key"]: e for e in spec["state_dict_keys"]}
    for key, value in recipe.items():
        assert value.sum(dtype=np.float64) == pytest.approx(
            entries[key]["check_sum_f64_of_f32"], rel=1e-12, abs=1e-9
        ), key
    expected = spec["weight_recipe"]["sha256_of_concatenated_float32_tensors"]
    assert make_weights.tensors_sha256(recipe) == expected


def test_state_dict_keys_in_pytorch_fid_order(spec):
    ref = [e["key"] for e in spec["state_dict_keys"] if "num_batches_tracked" not in e["key"]]
    assert inception.torch_state_dict_keys() == ref


@pytest.mark.parametrize("input_set", ["cifar32", "in64"])
def test_pool3_and_logits_match_float64_reference(reference, variables, trunk, input_set):
    x = reference[f"x__{input_set}"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    resized = jax.jit(inception.preprocess)(x)
    corner = reference[f"resized_corner_f64__{input_set}"].transpose(0, 2, 3, 1)
    sub23 = reference[f"resized_sub23_f64__{input_set}"].transpose(0, 2, 3, 1)
    assert _rel(resized[:, :8, :8], corner) < REL_TOL
    assert _rel(resized[:, ::23, ::23], sub23) < REL_TOL

    outputs = [trunk(variables, resized[i : i + 2]) for i in range(0, len(x), 2)]
    pool3 = np.concatenate([o[0] for o in outputs])
    logits = np.concatenate([o[1] for o in outputs])
    assert pool3.shape == (len(x), 2048) and logits.shape == (len(x), 1008)
    assert _rel(pool3, reference[f"pool3_f64__{input_set}"]) < REL_TOL
    assert _rel(logits, reference[f"logits_f64__{input_set}"]) < REL_TOL
    unbiased = logits - np.asarray(variables["params"]["fc"]["bias"])
    assert _rel(unbiased, reference[f"logits_unbiased_f64__{input_set}"]) < REL_TOL


@pytest.mark.parametrize("size", [(40, 333), (17, 299), (512, 301)])
def test_resize_matches_torch_bilinear_without_antialias(size):
    # Downsampling is where jax.image.resize (antialiased) and torch differ; ours must be torch.
    x = np.random.default_rng(0).uniform(0, 1, (2, *size, 3)).astype(np.float32)
    ours = np.asarray(inception.preprocess(x))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2),
        size=(299, 299),
        mode="bilinear",
        align_corners=False,
    )
    ref = 2 * ref.permute(0, 2, 3, 1).numpy() - 1
    # float32 inputs through two float32 matrix products: a few ulps of values of size 1.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_from_pytorch_rejects_wrong_keys_and_shapes(recipe):
    broken = dict(recipe)
    del broken["Mixed_6b.branch7x7_2.conv.weight"]
    with pytest.raises(ValueError, match="Mixed_6b.branch7x7_2.conv.weight"):
        inception.from_pytorch(broken)
    broken = dict(recipe)
    broken["fc.bias"] = np.zeros(1000, np.float32)
    with pytest.raises(ValueError, match=r"fc.bias.*\(1008,\)"):
        inception.from_pytorch(broken)
    prefixed = {f"module.{k}": v for k, v in recipe.items()}
    prefixed["module.fc.bias"] = torch.from_numpy(recipe["fc.bias"])
    converted = inception.from_pytorch(prefixed)
    np.testing.assert_array_equal(converted["params"]["fc"]["bias"], recipe["fc.bias"])


def test_pth_and_npz_weight_files_load_alike(recipe, variables, tmp_path, monkeypatch):
    from score_jax.evaluation import weights

    # A .pth as pytorch-fid ships it: torch tensors, num_batches_tracked buffers included.
    state = {k: torch.from_numpy(v) for k, v in recipe.items()}
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
    torch.save(state, tmp_path / weights.WEIGHTS_FILENAME)
    np.savez(tmp_path / "converted.npz", **recipe)
    for name in (weights.WEIGHTS_FILENAME, "converted.npz"):
        monkeypatch.setenv(weights.ENV_WEIGHTS, str(tmp_path / name))
        loaded = weights.load_inception_variables(download=False, allow_unverified=True)
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
            np.testing.assert_array_equal(a, b)


def test_weights_are_identified_and_unverified_ones_refused(recipe, tmp_path, monkeypatch):
    """A .pth is pytorch-fid's by its sha256 prefix, an .npz by the converter's provenance;
    anything else is refused unless explicitly allowed."""
    from score_jax.evaluation import weights

    pth = tmp_path / weights.WEIGHTS_FILENAME  # the right name, but synthetic tensors
    torch.save({k: torch.from_numpy(v) for k, v in recipe.items()}, pth)
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(pth))
    with pytest.raises(ValueError, match="is not pytorch-fid's"):
        weights.load_inception_variables(download=False)
    _, verified = weights.load_inception(download=False, allow_unverified=True)
    assert not verified
    # The check itself: the same file passes once its real digest is the expected one.
    monkeypatch.setattr(weights, "WEIGHTS_SHA256_PREFIX", weights.file_sha256(pth)[:8])
    assert weights.load_inception(download=False)[1]
    # An .npz carries the source's sha256 and a digest of its own tensors.
    sha = weights.file_sha256(pth)
    good = {weights.NPZ_PTH_SHA256: sha, weights.NPZ_TENSORS_SHA256: weights.tensors_sha256(recipe)}
    np.savez(tmp_path / "good.npz", **recipe, **good)
    tampered = dict(recipe, **{"fc.bias": recipe["fc.bias"] + 1})
    np.savez(tmp_path / "tampered.npz", **tampered, **good)
    np.savez(tmp_path / "bare.npz", **recipe)
    for name, expected in (("good.npz", True), ("tampered.npz", False), ("bare.npz", False)):
        path = tmp_path / name
        assert weights.weights_verified(path, weights.load_state_dict(path)) is expected, name
