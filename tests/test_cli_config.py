"""Config loading with overrides, and the command line's help and bad-input paths."""

import subprocess
import sys
import textwrap

import pytest

from score_jax.config import ConfigError, load_config

CONFIG = textwrap.dedent(
    """
    import ml_collections

    def get_config():
        config = ml_collections.ConfigDict()
        config.training = ml_collections.ConfigDict()
        config.training.batch_size = 128
        config.training.lr = 2e-4
        config.model = ml_collections.ConfigDict()
        config.model.attn_resolutions = (16,)
        config.model.name = "ncsnpp"
        config.model.centered = False
        return config
    """
)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG)
    return path


def test_overrides_are_typed(config_file):
    config = load_config(
        config_file,
        [
            "--config.training.batch_size=64",
            "config.training.lr=1",
            "model.attn_resolutions=(8,16)",
            "model.name=ddpm",
            "model.centered=True",
        ],
    )
    assert config.training.batch_size == 64
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert config.model.attn_resolutions == (8, 16)
    assert config.model.name == "ddpm" and config.model.centered is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.batchsize=3", "config.training.batchsize"),
        ("trainin.batch_size=3", "config.trainin"),
        ("training.batch_size=abc", "config.training.batch_size expects int"),
        ("training.batch_size", "--config.a.b=VALUE"),
    ],
)
def test_bad_overrides_name_the_key(config_file, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_file, [override])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.py")


def _run(*args):
    return subprocess.run([*args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("entry", [["score-jax"], [sys.executable, "-m", "score_jax"]])
def test_help_lists_subcommands(entry):
    result = _run(*entry, "--help")
    assert result.returncode == 0
    for command in ("train", "eval", "sample", "likelihood", "fid-stats", "convert"):
        assert command in result.stdout


def test_cli_reports_config_errors_without_traceback(config_file):
    result = _run(
        sys.executable,
        "-m",
        "score_jax",
        "train",
        "--config",
        str(config_file),
        "--workdir",
        "unused",
        "--config.training.nope=1",
    )
    assert result.returncode == 2
    assert "config.training.nope" in result.stderr and "Traceback" not in result.stderr
