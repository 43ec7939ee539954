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
