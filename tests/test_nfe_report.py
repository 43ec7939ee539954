"""`score-jax nfe-report`: settings, NFE bookkeeping, files, resume (the metric: test_swd.py)."""

from __future__ import annotations

import json

import jax
import pytest
from conftest import REPO
from PIL import Image

from score_jax.evaluation import plot
from score_jax.evaluation.nfe_report import parse_settings, setting_config

TOY = str(REPO / "configs" / "toy" / "mixture_vp.py")


def _toy(overrides=()):
    from score_jax.config import load_config

    return load_config(TOY, list(overrides))


def test_settings_and_their_configs():
    assert parse_settings(["pc:1000", "dpm_solver++:10,20", "dpm_solver-3:21", "pc:1000"]) == [
        ("pc", 1000), ("dpm_solver++", 10), ("dpm_solver++", 20), ("dpm_solver-3", 21),
    ]  # fmt: skip
    config = _toy()  # pc with euler_maruyama and no corrector; noise_removal on
    c = setting_config(config, "pc", 300)
    assert (c.sampling.method, c.model.num_scales) == ("pc", 300)
    config.sampling.corrector = "langevin"  # two evaluations per level
    assert setting_config(config, "pc", 300).model.num_scales == 150
    c = setting_config(config, "dpm_solver-3", 21)
    assert (c.sampling.method, c.sampling.steps, c.sampling.order) == ("dpm_solver", 20, 3)
    assert config.sampling.method == "pc" and config.model.num_scales == 1000  # a copy
    config.sampling.noise_removal = False
    assert setting_config(config, "heun", 35).sampling.steps == 35


def test_bad_settings_fail_with_the_reason():
    with pytest.raises(ValueError, match="expected METHOD"):
        parse_settings(["dpm_solver++"])
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        parse_settings(["ddim:10"])
    with pytest.raises(ValueError, match="only dpm_solver\\+\\+ and dpm_solver take an -ORDER"):
        parse_settings(["heun-2:10"])
    with pytest.raises(ValueError, match="NFE 'x' is not an int"):
        parse_settings(["heun:10,x"])
    config = _toy(["--config.sampling.corrector=langevin"])
    with pytest.raises(ValueError, match="not a multiple of the 2 score evaluations"):
        setting_config(config, "pc", 301)
    config.training.continuous = False
    with pytest.raises(ValueError, match="discrete-time model .* only at NFE 2000"):
        setting_config(config, "pc", 300)


def test_cli_nfe_report_on_toy_checkpoint(tmp_path, capsys):
    """Untrained MLP: its samples are far from the data, the training split is not, so the data
    row is small and lies well below every sampler's. Every setting counts
    the NFE it was asked for, and a rerun reuses the finished settings."""
    from score_jax.checkpoints import save_inference_checkpoint
    from score_jax.cli import main
    from score_jax.models import init_model

    overrides = ["--config.data.mixture.num_test=200"]
    save_inference_checkpoint(tmp_path, 3, init_model(jax.random.PRNGKey(0), _toy())["params"])
    argv = ["nfe-report", "--config", TOY, "--workdir", str(tmp_path), "--num", "64",
            "--samplers", "pc:8", "dpm_solver++:4", "dpm_solver-3:7", "heun:5"]  # fmt: skip
    assert main(argv + overrides) == 0
    folder = tmp_path / "nfe_report"
    report = json.loads((folder / "report.json").read_text())
    rows = report["rows"]
    assert [(r["sampler"], r["nfe"]) for r in rows] == [
        ("data (train)", None), ("pc", 8), ("dpm_solver++", 4), ("dpm_solver-3", 7), ("heun", 5),
    ]  # fmt: skip
    assert report["step"] == 3 and report["test_examples"] == 200
    # Two samples of the toy mixture (x spread 2, y spread 0.5), 64 vs 200 points: SW2 ~ 0.25;
    # a test split on another scale (3x) gives ~3.
    assert rows[0]["swd"] < 0.6, rows[0]
    assert all(rows[0]["swd"] < 0.5 * r["swd"] for r in rows[1:]), rows
    assert Image.open(folder / "report.png").size == plot.SIZE
    assert "dpm_solver-3" in capsys.readouterr().out
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*_nfe*.json")}
    assert len(stamps) == 4
    assert main(argv + overrides) == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*_nfe*.json")} == stamps
    assert json.loads((folder / "report.json").read_text())["rows"] == rows


def test_cli_classifier_score_on_unlabelled_data_says_why(tmp_path, capsys):
    """--classifier_score reaches the scorer: the toy mixture's labels are all 0, so the command
    stops before sampling and names the reason."""
    from score_jax.checkpoints import save_inference_checkpoint
    from score_jax.cli import main
    from score_jax.models import init_model

    save_inference_checkpoint(tmp_path, 3, init_model(jax.random.PRNGKey(0), _toy())["params"])
    argv = ["nfe-report", "--config", TOY, "--workdir", str(tmp_path), "--num", "8",
            "--samplers", "pc:2", "--classifier_score"]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 1
    assert "at least two classes" in capsys.readouterr().err
    assert not (tmp_path / "nfe_report").exists()
