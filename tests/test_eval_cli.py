"""Weight lookup, stats files and input checks fail clearly; fid-stats -> eval end to end."""

import numpy as np
import pytest

from score_jax import cli
from score_jax.evaluation import features, stats, weights


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    return tmp_path / "cache"


def test_missing_weight_file_says_where_to_get_it(empty_cache, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        weights.locate_weights(None, download=False)
    message = str(err.value)
    assert weights.WEIGHTS_URL in message
    assert str(empty_cache / weights.WEIGHTS_FILENAME) in message
    # A download that cannot connect (nothing listens on port 9) gives the same error, at once.
    monkeypatch.setattr(weights, "WEIGHTS_URL", "http://127.0.0.1:9/pt_inception.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        weights.locate_weights(None, download=True, timeout=2)
    assert not list(empty_cache.glob("*.part"))


def test_configured_weight_path_must_exist(empty_cache, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.pth"
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        weights.locate_weights(None, download=False)
    # The cache is found when nothing is configured, .npz included.
    monkeypatch.delenv(weights.ENV_WEIGHTS)
    empty_cache.mkdir()
    cached = empty_cache / weights.WEIGHTS_FILENAME.replace(".pth", ".npz")
    np.savez(cached, x=np.zeros(1))
    assert weights.locate_weights(None, download=False) == cached


def test_cli_reports_missing_weights_without_traceback(empty_cache, tmp_path, capsys, monkeypatch):
    config = tmp_path / "cfg.py"
    config.write_text(
        "from configs.defaults import get_default_configs\n"
        "def get_config():\n"
        "    c = get_default_configs()\n"
        "    c.data.dataset = 'DIGITS'\n"
        "    c.data.num_channels = 1\n"
        "    c.data.image_size = 8\n"
        "    return c\n"
    )
    monkeypatch.setattr(weights, "WEIGHTS_URL", "http://127.0.0.1:9/pt_inception.pth")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fid-stats", "--config", str(config), "--out", str(tmp_path / "s.npz")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "FID Inception weights not found" in err and "Traceback" not in err


def test_stats_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="score-jax fid-stats"):
        stats.load_stats(tmp_path / "absent.npz")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match=r"'mu' has shape \(64,\), expected \(2048,\)"):
        stats.load_stats(wrong)
    # pytorch-fid's format (mu, sigma only) and the official one (pool_3 only) both load.
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(30, 2048)).astype(np.float32)
    np.savez(tmp_path / "official.npz", pool_3=pool)
    loaded = stats.load_stats(tmp_path / "official.npz")
    np.testing.assert_allclose(loaded["mu"], pool.mean(0, dtype=np.float64), rtol=1e-12)
    np.savez(tmp_path / "ptfid.npz", mu=loaded["mu"], sigma=loaded["sigma"])
    assert set(stats.load_stats(tmp_path / "ptfid.npz")) == {"mu", "sigma"}


def test_images_of_wrong_dtype_or_range_are_refused():
    with pytest.raises(ValueError, match="dtype uint8 \\(divide uint8 images by 255\\)"):
        features.check_images(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        features.check_images(np.linspace(-1, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        features.check_images(np.zeros((2, 8, 8, 4), np.float32))
    assert features.check_images(np.ones((1, 4, 4, 1))).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# End to end: a random-init checkpoint on 8x8 digits, recipe Inception weights, the real CLI.

_E2E_CONFIG = """
from configs.defaults import get_default_configs, set_sde


def get_config():
    c = get_default_configs()
    set_sde(c, "vpsde", continuous=True, reduce_mean=True)
    c.training.snapshot_freq = 5
    c.sampling.predictor = "euler_maruyama"
    c.sampling.corrector = "none"
    c.data.dataset = "npz"
    c.data.path = {data!r}
    c.data.image_size = 8
    c.data.num_channels = 1
    c.data.random_flip = False
    c.model.name = "mlp"
    c.model.nf = 32
    c.model.num_res_blocks = 1
    c.model.embedding_type = "positional"
    c.model.dropout = 0.0
    c.model.num_scales = 4  # 4 sampling steps: the network is random anyway
    c.eval.begin_ckpt = 1
    c.eval.end_ckpt = 1
    c.eval.batch_size = 4
    c.eval.num_samples = 6
    c.eval.enable_sampling = True
    c.eval.enable_loss = True
    c.eval.enable_bpd = True
    c.eval.bpd_repeats = 1
    c.eval.inception_weights = {weights!r}
    c.eval.allow_unverified_inception = True  # the fixture's synthetic weights
    return c
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, reference_dir):
    """Config file, workdir with a random-init checkpoint at step 5 (ckpt 1), stats file."""
    import importlib.util
    import json

    import jax
    from conftest import REPO
    from sklearn.datasets import load_digits

    from score_jax.checkpoints import save_inference_checkpoint
    from score_jax.config import load_config
    from score_jax.models import init_model

    root = tmp_path_factory.mktemp("e2e")
    spec = importlib.util.spec_from_file_location(
        "make_inception_weights", REPO / "scripts" / "make_inception_weights.py"
    )
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    recipe = json.loads((reference_dir / "fid_inception.json").read_text())
    np.savez(root / "inception.npz", **make_weights.recipe_state_dict(recipe))

    digits = np.round(load_digits().images * 255 / 16).astype(np.uint8)[..., None]
    np.savez(root / "digits.npz", images=digits[:12], test_images=digits[12:20])
    config_path = root / "config.py"
    config_path.write_text(
        _E2E_CONFIG.format(data=str(root / "digits.npz"), weights=str(root / "inception.npz"))
    )
    config = load_config(config_path)
    params = init_model(jax.random.PRNGKey(0), config)["params"]
    save_inference_checkpoint(root / "work", 5, params)

    stats_path = root / "digits_stats.npz"
    assert cli.main(["fid-stats", "--config", str(config_path), "--out", str(stats_path)]) == 0
    return {"root": root, "config": config_path, "stats": stats_path, "cfg": config}


def _eval(e2e, folder, *overrides):
    argv = ["eval", "--config", str(e2e["config"]), "--workdir", str(e2e["root"] / "work")]
    argv += ["--eval_folder", folder, f"--config.eval.fid_stats={e2e['stats']}", *overrides]
    return cli.main(argv)


def test_fid_stats_file_matches_its_images(e2e):
    """The stats equal np.mean / np.cov of the extracted features of all 12 train digits."""
    from score_jax.evaluation.features import FeatureExtractor
    from score_jax.evaluation.weights import load_inception_variables

    saved = stats.load_stats(e2e["stats"])
    with np.load(e2e["root"] / "digits.npz") as data:
        images = data["images"].astype(np.float32) / 255.0
    extractor = FeatureExtractor(load_inception_variables(e2e["cfg"]), batch_size=4)
    pool3, _ = extractor(images)
    assert saved["pool_3"].shape == (12, 2048)
    np.testing.assert_array_equal(saved["pool_3"], pool3)
    np.testing.assert_allclose(saved["mu"], pool3.mean(0, dtype=np.float64), rtol=1e-12)
    cov = np.cov(pool3.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(saved["sigma"], cov, rtol=1e-9, atol=1e-15)


@pytest.fixture(scope="module")
def evaluated(e2e):
    """One uninterrupted evaluation into eval_once: (report, its batch folder)."""
    import json

    assert _eval(e2e, "eval_once") == 0
    folder = e2e["root"] / "work" / "eval_once"
    report = json.loads((folder / "report_5.json").read_text())
    return report, folder / f"ckpt_5_{report['result_key']}"


def _saved(folder, key, num=6):
    """Array `key` of batch files 0 and 1 (eval.batch_size 4), the first `num` rows."""
    return np.concatenate([np.load(folder / f"batch_{r}.npz")[key] for r in (0, 1)])[:num]


def test_eval_reports_metrics_of_its_saved_samples(e2e, evaluated, capsys):
    """FID, IS and KID equal the formulas applied to the Inception outputs of the saved samples."""
    from score_jax.evaluation import metrics
    from score_jax.evaluation.features import FeatureExtractor
    from score_jax.evaluation.weights import load_inception_variables

    once, folder = evaluated
    assert once["num_samples"] == 6 and once["ckpt"] == 1 and once["bpd_dataset"] == "test"
    assert once["inception_weights_verified"] is False  # synthetic weights, allowed, recorded
    assert np.isfinite(once["eval_loss"]) and once["bits_per_dim"] > 0
    # The saved features are the Inception outputs of the saved samples: pool3 [.., 2048] and
    # the 1008 logits, not one in place of the other.
    samples = _saved(folder, "samples")
    pool, logits = _saved(folder, "pool_3"), _saved(folder, "logits")
    assert samples.dtype == np.uint8 and samples.shape == (6, 8, 8, 1)
    assert pool.shape == (6, 2048) and logits.shape == (6, 1008)
    extractor = FeatureExtractor(load_inception_variables(e2e["cfg"]), batch_size=4)
    pool_again, logits_again = extractor(samples.astype(np.float32) / 255.0)
    np.testing.assert_allclose(pool, pool_again, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, logits_again, rtol=1e-5, atol=1e-5)

    ref = stats.load_stats(e2e["stats"])
    pool = pool.astype(np.float64)
    fid = metrics.frechet_distance(
        pool.mean(0), np.cov(pool, rowvar=False), ref["mu"], ref["sigma"]
    )
    assert once["fid"] == pytest.approx(fid, rel=1e-9)
    assert once["inception_score"] == pytest.approx(metrics.inception_score(logits, 1)[0], 1e-9)
    np.testing.assert_allclose(
        once["inception_score_10_splits"], metrics.inception_score(logits, 6)
    )
    kid_mean, kid_std = metrics.kid(pool, ref["pool_3"])
    assert (once["kid"], once["kid_std"]) == pytest.approx((kid_mean, kid_std), rel=1e-9)


def test_eval_resumes_after_kill_with_the_same_numbers(e2e, evaluated, monkeypatch, capsys):
    import json

    from score_jax.evaluation import run

    once = dict(evaluated[0])
    # Kill after the first sample batch is saved, then restart: same numbers as one go.
    real_save = run.save_npz_atomic
    calls = []

    def save_then_die(path, **arrays):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C or a preemption signal does mid-run
        return real_save(path, **arrays)

    monkeypatch.setattr(run, "save_npz_atomic", save_then_die)
    with pytest.raises(SystemExit) as killed:
        _eval(e2e, "eval_killed")
    assert killed.value.code == 130
    resumed_dir = e2e["root"] / "work" / "eval_killed"
    batches = resumed_dir / evaluated[1].name  # same settings and weights: the same key
    assert (batches / "batch_0.npz").is_file()
    assert not (resumed_dir / "report_5.json").exists()
    first_batch = (batches / "batch_0.npz").stat().st_mtime_ns
    monkeypatch.setattr(run, "save_npz_atomic", real_save)
    assert _eval(e2e, "eval_killed") == 0
    assert "inception_score" in capsys.readouterr().out  # the summary table
    resumed = json.loads((resumed_dir / "report_5.json").read_text())
    assert (batches / "batch_0.npz").stat().st_mtime_ns == first_batch
    once.pop("fid_stats"), resumed.pop("fid_stats")
    assert resumed == once


def test_sample_cli_writes_npz_and_grid_equal_to_eval_batches(e2e, evaluated, tmp_path):
    out = tmp_path / "samples.npz"
    argv = ["sample", "--config", str(e2e["config"]), "--workdir", str(e2e["root"] / "work")]
    assert cli.main([*argv, "--num", "5", "--out", str(out)]) == 0
    with np.load(out) as data:
        samples = data["samples"]
    assert samples.dtype == np.uint8 and samples.shape == (5, 8, 8, 1)
    assert out.with_suffix(".png").is_file()
    # Same checkpoint, seed and batch size: the same draws as eval's first batches.
    np.testing.assert_array_equal(samples, _saved(evaluated[1], "samples", 5))


def test_saved_batches_of_other_sampling_settings_are_refused(e2e, evaluated, capsys):
    import shutil

    # A copy of a finished evaluation without its report, so the checkpoint is evaluated again.
    folder = e2e["root"] / "work" / "eval_settings"
    shutil.copytree(evaluated[1].parent, folder, ignore=shutil.ignore_patterns("report_*"))
    with pytest.raises(SystemExit) as failed:
        _eval(e2e, "eval_settings", "--config.sampling.predictor=reverse_diffusion")
    assert failed.value.code == 1
    assert "other settings (sampling changed)" in capsys.readouterr().err


def test_sample_draws_only_what_it_needs_on_any_device_count(e2e, tmp_path, monkeypatch):
    """--num 3 with eval.batch_size 99 on 4 devices: one batch of 4, not 99 (which 4 devices
    cannot split either); --out x.png keeps the samples in x.npz beside the grid."""
    from score_jax.evaluation import sample

    sizes = []
    real = sample.make_batch_sampler

    def recording(config, batch_size, mesh):
        sizes.append(batch_size)
        return real(config, batch_size, mesh)

    monkeypatch.setattr(sample, "make_batch_sampler", recording)
    argv = ["sample", "--config", str(e2e["config"]), "--workdir", str(e2e["root"] / "work")]
    out = tmp_path / "grid.png"
    assert cli.main([*argv, "--num", "3", "--out", str(out), "--config.eval.batch_size=99"]) == 0
    assert sizes == [4]
    with np.load(tmp_path / "grid.npz") as data:
        assert data["samples"].shape == (3, 8, 8, 1)
    from PIL import Image

    assert Image.open(out).format == "PNG"
    assert sample.sampling_batch_size(e2e["cfg"], 9, 4) == 4  # eval.batch_size 4: 3 rounds
    with pytest.raises(SystemExit) as refused:
        cli.main([*argv, "--num", "3", "--out", str(tmp_path / "x.txt")])
    assert refused.value.code == 1


def test_saved_reports_are_reused_only_under_the_same_settings_and_weights(e2e, evaluated, caplog):
    """A changed SDE schedule (same checkpoint) is evaluated afresh, under its own key."""
    import json

    once, folder = evaluated
    work = e2e["root"] / "work"
    calls = []
    from score_jax.evaluation import run

    real = run._evaluate_checkpoint
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "_evaluate_checkpoint", lambda *a: calls.append(1) or real(*a))
        assert _eval(e2e, "eval_once") == 0  # unchanged: the saved report
        assert calls == []
        assert _eval(e2e, "eval_once", "--config.model.beta_max=5.0",
                     "--config.eval.enable_sampling=False") == 0  # fmt: skip
    assert calls == [1] and "evaluating again" in caplog.text
    changed = json.loads((work / "eval_once" / "report_5.json").read_text())
    assert changed["result_key"] != once["result_key"]
    assert changed["bits_per_dim"] != pytest.approx(once["bits_per_dim"], abs=1e-3)
    assert (work / "eval_once" / f"ckpt_5_{changed['result_key']}" / "bpd.json").is_file()
