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


def test_eval_finds_the_digits_runs_checkpoint_whatever_n_iters(tmp_path, capsys):
    """The digits default evaluates its latest checkpoint (it looked for numbers 9..26); an
    official config whose range finds nothing says which steps exist and what works."""
    import jax

    from score_jax.checkpoints import save_inference_checkpoint
    from score_jax.config import load_config
    from score_jax.evaluation.run import checkpoints_to_evaluate
    from score_jax.models import init_model

    digits = str(REPO / "configs/digits/vp_ddpmpp.py")
    config = load_config(digits, ["training.n_iters=200", "model.nf=8"])
    params = init_model(jax.random.PRNGKey(0), config)["params"]
    for step in (100, 200):
        save_inference_checkpoint(tmp_path, step, params)
    assert checkpoints_to_evaluate(config, tmp_path) == [200]
    pinned = load_config(digits, ["training.snapshot_freq=100", "eval.begin_ckpt=1",
                                  "eval.end_ckpt=1"])  # fmt: skip
    assert checkpoints_to_evaluate(pinned, tmp_path) == [100]
    official = str(REPO / "configs/ve/cifar10_ncsnpp_continuous.py")
    code, err = run(capsys, "eval", "--config", official, "--workdir", str(tmp_path))
    assert code == 1 and "Its steps are [100, 200], none of them a multiple" in err
    assert "--config.eval.begin_ckpt=None --config.eval.end_ckpt=None" in err


def test_help_names_overrides_and_every_sampler(capsys):
    from score_jax.sampling.get_sampler import METHODS

    assert cli.SAMPLING_METHODS == METHODS
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--config.section.key=VALUE" in text and "|".join(METHODS) in text


def test_library_info_logs_only_with_verbose(tmp_path, capsys):
    """Orbax's per-file INFO lines and JAX's backend probing stay out of a normal run."""
    import logging

    argv = ["likelihood", "--config", TOY, "--workdir", str(tmp_path)]
    loggers = [logging.getLogger(name) for name in cli._CHATTY_LOGGERS]
    assert "absl" in cli._CHATTY_LOGGERS and "jax._src.xla_bridge" in cli._CHATTY_LOGGERS
    try:
        for verbose, level in ((False, logging.WARNING), (True, logging.NOTSET)):
            for logger in loggers:
                logger.setLevel(logging.NOTSET)
            run(capsys, *argv, *(["--verbose"] if verbose else []))  # no checkpoint: exits 1
            assert [logger.level for logger in loggers] == [level] * len(loggers)
    finally:
        for logger in loggers:
            logger.setLevel(logging.NOTSET)


def test_workdir_records_its_config_and_later_commands_are_warned(tmp_path, caplog):
    """train records the resolved config; likelihood with another SDE schedule on that workdir
    names the keys that differ (and still runs: the user may mean it)."""
    import json
    import logging

    small = [f"--config.{kv}" for kv in (
        "model.nf=16", "training.n_iters=2", "training.batch_size=16",
        "training.n_jitted_steps=2", "training.snapshot_freq=2", "training.log_freq=2",
        "training.eval_freq=2", "training.snapshot_freq_for_preemption=2",
        "eval.batch_size=16", "data.mixture.num_test=16",
    )]  # fmt: skip
    argv = ["--config", TOY, "--workdir", str(tmp_path), *small]
    assert cli.main(["train", *argv, "--config.training.snapshot_sampling=False"]) == 0
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["model"]["nf"] == 16 and recorded["training"]["sde"] == "vpsde"
    with caplog.at_level(logging.WARNING):
        assert cli.main(["likelihood", *argv]) == 0
        assert "differs from the one that trained" not in caplog.text
        assert cli.main(["likelihood", *argv, "--config.model.beta_max=5.0"]) == 0
    assert "model.beta_max: 20.0 -> 5.0" in caplog.text
