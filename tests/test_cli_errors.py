"""Input the command line refuses up front, with one line naming what is wrong."""

import pytest
from conftest import REPO

from score_jax import cli

TOY = str(REPO / "configs/toy/mixture_vp.py")


def run(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(list(argv))
    return done.value.code, capsys.readouterr().err


def test_nonpositive_step_count_is_refused(tmp_path, capsys):
    code, err = run(capsys, "train", "--config", TOY, "--workdir", str(tmp_path / "w"),
                    "--config.training.n_iters=-5")  # fmt: skip
    assert code == 1 and "config.training.n_iters must be >= 1, got -5" in err
    assert not (tmp_path / "w" / "checkpoints").exists()  # nothing was trained or written


def test_a_data_file_given_as_config_is_refused(tmp_path, capsys):
    data = tmp_path / "digits.npz"
    data.write_bytes(b"not a config")
    code, err = run(capsys, "train", "--config", str(data), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "a config is a Python file (.py) with get_config()" in err


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    workdir = tmp_path / "file"
    workdir.write_text("")
    extra = {"sample": ["--num", "4", "--out", str(tmp_path / "s.npz")]}
    for command in ("train", "sample", "likelihood", "eval"):
        argv = [command, "--config", TOY, "--workdir", str(workdir), *extra.get(command, [])]
        code, err = run(capsys, *argv)
        assert code == 1 and f"--workdir {workdir} is a file" in err, (command, err)
