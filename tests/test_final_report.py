"""The digits run's final report: its bits/dim are the ones `score-jax likelihood` computes for
the same config and weights (shared, keyed results), and rerunning a finished training leaves the
report as it was."""

import json

import pytest
from conftest import REPO

from score_jax import cli

pytestmark = pytest.mark.usefixtures("compilation_cache")

CONFIG = str(REPO / "configs/digits/vp_ddpmpp.py")
TINY = [
    "--config.training.n_iters=2",
    "--config.model.nf=8",
    "--config.model.num_scales=10",  # the report's sample grid: 10 PC steps
    "--config.training.batch_size=16",
]


def test_report_shares_likelihood_results_and_survives_a_rerun(tmp_path, capsys):
    argv = ["--config", CONFIG, "--workdir", str(tmp_path), *TINY]
    assert cli.main(["train", *argv]) == 0
    report_path = tmp_path / "report.json"
    report = json.loads(report_path.read_text())
    assert report["step"] == 2 and report["test_bpd"] > 0
    (summary_dir,) = (tmp_path / "likelihood").glob("test_step2_*")
    files = sorted(summary_dir.glob("r*_b*.npz"))
    assert len(files) == 3  # 297 test digits in batches of 100 on 4 devices: 2 full + 1 padded
    stamps = [f.stat().st_mtime_ns for f in files]

    # `score-jax likelihood` with the same config and weights reads the report's batches.
    assert cli.main(["likelihood", *argv, "--split", "test"]) == 0
    (summary,) = (tmp_path / "likelihood").glob("test_step2_*.json")
    assert json.loads(summary.read_text())["bpd"] == pytest.approx(report["test_bpd"], abs=1e-9)
    assert [f.stat().st_mtime_ns for f in files] == stamps

    # Training again has nothing to do and leaves the report (and its training time) alone.
    before = report_path.read_text()
    assert cli.main(["train", *argv]) == 0
    assert report_path.read_text() == before
