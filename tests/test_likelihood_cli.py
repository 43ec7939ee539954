"""Dataset bits/dim: dequantization, padding, sharding and resuming, checked against a closed
form; and `score-jax likelihood` end to end on a toy checkpoint."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from score_jax import parallel
from score_jax.evaluation.bpd import dataset_bpd, make_bpd_step
from score_jax.likelihood import bpd_offset, dequantize
from score_jax.sde import VPSDE
from score_jax.toy import GaussianMixture

SDE = VPSDE(0.1, 20.0)
# The model: N(0, 0.1^2 I) on centred data 2x - 1, i.e. N(0.5, 0.05^2) per value in [0, 1].
MODEL = GaussianMixture(jnp.zeros((1, 3)), jnp.array([0.1]), jnp.ones(1))
SCORE_FN = MODEL.score_fn(SDE)
NUM, BATCH, REPEATS = 20, 8, 2  # 3 batches per pass, the last with 4 real rows and 4 padding


def _batches():
    rng = np.random.default_rng(0)
    values = np.clip(rng.normal(0.5, 0.05, (NUM, 1, 1, 3)) * 256, 0, 255).astype(np.uint8)
    batches = []
    for start in range(0, NUM, BATCH):
        image = values[start : start + BATCH]
        mask = np.arange(BATCH) < len(image)
        image = np.concatenate([image, np.zeros((BATCH - len(image), 1, 1, 3), np.uint8)])
        batches.append({"image": image, "mask": mask})
    return values, batches


@pytest.fixture(scope="module")
def setup():
    mesh = parallel.make_mesh()  # 4 CPU devices (conftest): 2 rows each
    step = make_bpd_step(
        lambda params: SCORE_FN,
        SDE,
        mesh,
        scaler=lambda x: 2 * x - 1,
        offset=bpd_offset(lambda x: (x + 1) / 2),
        hutchinson="exact",
    )
    return mesh, step


def test_dataset_bpd_equals_closed_form_and_resumes(setup, tmp_path):
    mesh, step = setup
    values, batches = _batches()
    key = jax.random.key(3)
    calls = []

    def counted_step(*args):
        calls.append(1)
        return step(*args)

    folder = tmp_path / "bpd"
    result = dataset_bpd(counted_step, {}, batches, mesh, key=key, repeats=REPEATS, folder=folder)
    assert len(calls) == 3 * REPEATS
    assert result["num_values"] == NUM * REPEATS  # the padding rows are not counted

    # The same numbers from the closed form: redo the dequantization with the documented keys
    # (example i of pass r: fold_in(fold_in(split(key)[0], r), i)) and evaluate log p_eps.
    dequant_key = jax.random.split(key)[0]
    centred = GaussianMixture(jnp.zeros((1, 3)), jnp.array([0.1]), jnp.ones(1)).perturbed(SDE, 1e-5)
    expected = []
    for r in range(REPEATS):
        x = 2 * dequantize(dequant_key, jnp.asarray(values), jnp.arange(NUM), r) - 1
        logp = np.asarray(centred.log_prob(x.reshape(NUM, 3)), np.float64)
        expected.append(-logp / math.log(2) / 3 + 7)
    expected = np.concatenate(expected)
    got = np.concatenate(
        [np.load(folder / f"r{r}_b{i:05d}.npz")["bpd"] for r in range(REPEATS) for i in range(3)]
    )
    # Exact trace at rtol = atol = 1e-5: < 2e-3 nats = 1e-3 bits/dim at D = 3; the N(0, I) prior
    # differs from the true p_T by ~1e-4 nats here (centred data).
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)
    assert abs(result["bpd"] - expected.mean()) < 1e-3
    # And on average the differential entropy of N(0.5, 0.05^2) in bits plus 8 bits for the
    # 8-bit grid: 4.73 bits/dim (the 1/256 bins are narrow next to 0.05, so dequantizing the
    # rounded values changes the density by < 1e-3 relative).
    # The two passes differ only by the dequantization noise, so the 20 examples are the
    # independent draws: their standard error is the right yardstick.
    per_example = expected.reshape(REPEATS, NUM).mean(axis=0)
    entropy = 0.5 * math.log2(2 * math.pi * math.e * 0.05**2) + 8
    sem = per_example.std(ddof=1) / math.sqrt(NUM)
    assert abs(result["bpd"] - entropy) < 3 * sem, (result["bpd"], entropy, sem)
    assert result["bpd_stderr"] == pytest.approx(
        expected.std(ddof=1) / math.sqrt(expected.size), rel=1e-2
    )

    # Restart: finished batches are read back, a missing one is recomputed, the summary agrees.
    (folder / "r1_b00001.npz").unlink()
    calls.clear()
    again = dataset_bpd(counted_step, {}, batches, mesh, key=key, repeats=REPEATS, folder=folder)
    assert len(calls) == 1
    assert again["bpd"] == pytest.approx(result["bpd"], abs=1e-6)


def test_dataset_bpd_refuses_bad_data_and_changed_settings(setup, tmp_path):
    mesh, step = setup
    wrong_range = [{"image": np.full((8, 1, 1, 3), 128.0, np.float32)}]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dataset_bpd(step, {}, wrong_range, mesh, key=jax.random.key(0), repeats=1)
    _, batches = _batches()
    folder = tmp_path / "bpd"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"batch_size": 16}))
    with pytest.raises(ValueError, match="batch_size: 16 -> 8"):
        dataset_bpd(
            step, {}, batches, mesh, key=jax.random.key(0), repeats=1, folder=folder,
            settings={"batch_size": 8},
        )  # fmt: skip


def test_cli_likelihood_on_toy_checkpoint(tmp_path, capsys):
    from score_jax.checkpoints import save_inference_checkpoint
    from score_jax.cli import main
    from score_jax.config import load_config
    from score_jax.models import init_model

    overrides = [
        "--config.data.mixture.num_test=24",
        "--config.eval.batch_size=16",
        "--config.eval.bpd_repeats=2",
    ]
    config_file = str(REPO / "configs" / "toy" / "mixture_vp.py")
    config = load_config(config_file, overrides)
    save_inference_checkpoint(tmp_path, 7, init_model(jax.random.PRNGKey(0), config)["params"])
    argv = ["likelihood", "--config", config_file, "--workdir", str(tmp_path)]
    assert main(argv + overrides) == 0
    (summary,) = (tmp_path / "likelihood").glob("test_step7_*.json")
    result = json.loads(summary.read_text())
    assert result["step"] == 7 and result["num_values"] == 24 * 2  # padded last batch masked
    assert "bits/dim on test at step 7" in capsys.readouterr().out
    files = sorted(summary.with_suffix("").glob("r*_b*.npz"))
    assert len(files) == 4
    values = np.concatenate([np.load(f)["bpd"] for f in files])
    assert np.all(np.isfinite(values)) and result["bpd"] == pytest.approx(values.mean())
    # A second run finds every batch saved and only re-reads them.
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(argv + overrides) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert json.loads(summary.read_text())["bpd"] == result["bpd"]
    # Another SDE (or schedule) on the same checkpoint is computed afresh, never read from
    # these files: it used to print the VP run's number.
    for changed in ("--config.training.sde=subvpsde", "--config.model.beta_max=5.0"):
        assert main(argv + overrides + [changed]) == 0
    summaries = sorted((tmp_path / "likelihood").glob("test_step7_*.json"))
    values = [json.loads(p.read_text())["bpd"] for p in summaries]
    assert len(summaries) == 3 and len({round(v, 6) for v in values}) == 3, values
    assert [f.stat().st_mtime_ns for f in files] == stamps
