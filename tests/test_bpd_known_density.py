"""Bits/dim of uint8 images through `score-jax likelihood` and `score-jax eval`, against a density
whose bits/dim are worked out by hand on the 8-bit scale.

The model is a Gaussian N(m, s^2) per value on the centred data x = 2 v / 256 - 1, v = k + u the
dequantized 8-bit value; its exact perturbed score replaces the network (the config, data
pipeline, scaler, dequantization and bits/dim offset are the real ones). In the 8-bit units v
that density is N(128 (1 + m), (128 s)^2), so a code built from it spends -log2 of that density
per value: no offset appears in the hand computation, which is what the offset must reproduce.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import cli, models, score_model
from score_jax.likelihood import dequantize
from score_jax.toy import GaussianMixture

MEAN, STD = 0.05, 0.2  # of the model on centred data in [-1, 1]
NUM, SIZE, SEED, STEP = 12, 2, 7, 1

CONFIG = """
from configs.defaults import get_default_configs, set_sde


def get_config():
    c = get_default_configs()
    set_sde(c, "vpsde", continuous=True, reduce_mean=True)
    c.seed = {seed}
    c.data.dataset = "npz"
    c.data.path = {path!r}
    c.data.image_size = {size}
    c.data.num_channels = 1
    c.data.random_flip = False
    c.data.centered = True
    c.model.name = "mlp"
    c.model.nf = 8
    c.model.num_res_blocks = 1
    c.model.embedding_type = "positional"
    c.training.snapshot_freq = 1
    c.eval.begin_ckpt = c.eval.end_ckpt = {step}
    c.eval.batch_size = 4
    c.eval.bpd_repeats = 2
    c.eval.bpd_hutchinson = "exact"
    c.eval.enable_loss = False
    c.eval.enable_sampling = False
    c.eval.enable_bpd = True
    return c
"""


def exact_score_fn(sde, model, variables, train=False, continuous=True):
    """The exact score of the model density perturbed by `sde`; the network is not used."""
    dim = SIZE * SIZE
    gaussian = GaussianMixture(jnp.full((1, dim), MEAN), jnp.array([STD]), jnp.ones(1))
    flat = gaussian.score_fn(sde)
    return lambda x, t: flat(x.reshape(x.shape[0], dim), t).reshape(x.shape)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Config file, a workdir with a (random, unused) MLP checkpoint at STEP, the test images."""
    from score_jax.checkpoints import save_inference_checkpoint
    from score_jax.config import load_config

    root = tmp_path_factory.mktemp("bpd_known")
    rng = np.random.default_rng(0)
    # Data from the model's own discretised density, so the bits/dim are near its entropy.
    values = rng.normal(128 * (1 + MEAN), 128 * STD, (2 * NUM, SIZE, SIZE, 1))
    images = np.clip(np.floor(values), 0, 255).astype(np.uint8)
    np.savez(root / "data.npz", images=images[:NUM], test_images=images[NUM:])
    path = root / "config.py"
    path.write_text(CONFIG.format(seed=SEED, path=str(root / "data.npz"), size=SIZE, step=STEP))
    config = load_config(path)
    params = models.init_model(jax.random.PRNGKey(0), config)["params"]
    save_inference_checkpoint(root / "work", STEP, params)
    return path, root / "work", images[NUM:]


def hand_bits_per_dim(test_images: np.ndarray) -> np.ndarray:
    """-log2 N(v; 128 (1 + MEAN), (128 STD)^2) per value, averaged per example, each repeat.

    v = k + u with u the dequantization noise bpd_from_config draws: pass r of example i uses
    fold_in(fold_in(split(fold_in(PRNGKey(seed + 2), step))[0], r), i) (dataset_bpd's rule).
    """
    key = jax.random.fold_in(jax.random.PRNGKey(SEED + 2), STEP)
    dequant_key = jax.random.split(key)[0]
    mean, std = 128 * (1 + MEAN), 128 * STD
    out = []
    for r in range(2):
        unit = dequantize(dequant_key, jnp.asarray(test_images), jnp.arange(NUM), r)
        v = np.asarray(unit, np.float64).reshape(NUM, -1) * 256
        nats = 0.5 * ((v - mean) / std) ** 2 + math.log(std * math.sqrt(2 * math.pi))
        out.append((nats / math.log(2)).mean(axis=1))
    return np.concatenate(out)


def test_likelihood_and_eval_bits_per_dim_equal_hand_computation(setup, monkeypatch, capsys):
    config_path, workdir, test_images = setup
    monkeypatch.setattr(score_model, "get_score_fn", exact_score_fn)
    expected = hand_bits_per_dim(test_images)
    # ~8 bits/dim: log2(128 * 0.2 * sqrt(2 pi e)) = 6.72 plus the spread of the sample.
    assert 6 < expected.mean() < 8

    argv = ["--config", str(config_path), "--workdir", str(workdir)]
    assert cli.main(["likelihood", *argv, "--split", "test"]) == 0
    (summary,) = (workdir / "likelihood").glob(f"test_step{STEP}_*.json")
    result = json.loads(summary.read_text())
    assert result["num_values"] == 2 * NUM
    # The ODE with the exact trace at rtol = atol = 1e-5 over D = 4 values: < 1e-3 bits/dim,
    # plus the VP prior mismatch and the t = 1e-5 end time (< 1e-4). The wrong scaler in the
    # offset (7 - scaler(-1) = 10 instead of 7 - inverse_scaler(-1) = 7) is 3 bits/dim off.
    assert result["bpd"] == pytest.approx(expected.mean(), abs=2e-3)
    assert result["bpd_stderr"] == pytest.approx(
        expected.std(ddof=1) / math.sqrt(expected.size), rel=0.05
    )

    assert cli.main(["eval", *argv, "--eval_folder", "eval_bpd"]) == 0
    report = json.loads((workdir / "eval_bpd" / f"report_{STEP}.json").read_text())
    assert report["bits_per_dim"] == pytest.approx(expected.mean(), abs=2e-3)
    assert "bits_per_dim" in capsys.readouterr().out
