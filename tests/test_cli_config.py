"""Config loading with overrides, and the command line's help and bad-input paths."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from score_jax.config import SHIPPED_CONFIGS, ConfigError, load_config, resolve_config_path

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


def test_shipped_configs_resolve_from_any_directory(tmp_path, monkeypatch):
    """`configs/...` names the shipped file when the working directory has no such file."""
    monkeypatch.chdir(tmp_path)
    shipped = resolve_config_path("configs/digits/vp_ddpmpp.py")
    # The repository's file, or its copy in site-packages after a non-editable install.
    assert shipped == SHIPPED_CONFIGS / "digits" / "vp_ddpmpp.py"
    assert shipped.read_bytes() == (REPO / "configs/digits/vp_ddpmpp.py").read_bytes()
    config = load_config("configs/ve/cifar10_ncsnpp_continuous.py", ["model.nf=64"])
    assert config.model.name == "ncsnpp" and config.model.nf == 64
    assert config.model.sigma_max == 50 and config.training.continuous is True
    with pytest.raises(ConfigError, match="shipped configs in"):
        load_config("configs/digits/nope.py")
    # A file of that name in the working directory wins: it is what the user pointed at.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.py").write_text(CONFIG)
    assert load_config("configs/mine.py").training.batch_size == 128


def test_non_editable_install_ships_the_configs(tmp_path):
    """A real (non-editable) install resolves `--config configs/...` from another directory.

    Builds the wheel from a copy of the sources (no build/ folder in the checkout) and installs
    it with --target; the dependencies come from the running environment.
    """
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("score_jax", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    _check(_run(*pip, "--target", str(target), str(source)))
    probe = (
        "import score_jax.config as c; "
        "config = c.load_config('configs/digits/vp_ddpmpp.py'); "
        "print(c.resolve_config_path('configs/digits/vp_ddpmpp.py'), config.data.dataset)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    _check(result)
    assert result.stdout.split() == [str(target / "configs/digits/vp_ddpmpp.py"), "DIGITS"]


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-2000:]


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
