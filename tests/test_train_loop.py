"""The training loop: exact resume, NaN stops, and clear CLI errors."""

import json
import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from score_jax import checkpoints, cli
from score_jax.config import load_config
from score_jax.train import loop

pytestmark = pytest.mark.usefixtures("compilation_cache")

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy/mixture_vp.py")
TINY = [
    "model.nf=32",
    "training.batch_size=16",
    "eval.batch_size=16",
    "training.n_jitted_steps=2",
    "training.log_freq=2",
    "training.eval_freq=4",
    "training.snapshot_freq=4",
    "training.snapshot_freq_for_preemption=2",
    "training.snapshot_sampling=False",
    "optim.warmup=2",
    "optim.lr=0.01",
]


def tiny_config(*overrides):
    return load_config(CONFIG, [*TINY, *overrides])


def host_state(state):
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)


def assert_same_state(a, b):
    # Same program on the same devices and data: the results must be bitwise equal.
    for x, y in zip(jax.tree.leaves(host_state(a)), jax.tree.leaves(host_state(b)), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def one_go(tmp_path_factory):
    """8 steps in one run, with a sample snapshot at step 8."""
    workdir = tmp_path_factory.mktemp("one_go")
    config = tiny_config(
        "training.n_iters=8", "training.snapshot_sampling=True", "training.snapshot_freq=8"
    )
    return workdir, loop.train(config, workdir)


def test_resume_is_exact(one_go, tmp_path, caplog):
    # Interruptions by signals, kill -9 and n_jitted_steps changes: tests/test_train_resume.py.
    workdir, state_one_go = one_go
    first = loop.train(tiny_config("training.n_iters=4"), tmp_path)
    assert int(host_state(first).step) == 4
    with caplog.at_level(logging.INFO, logger=loop.__name__):
        resumed = loop.train(tiny_config("training.n_iters=8"), tmp_path)
    assert int(host_state(resumed).step) == 8
    # A retrain from scratch would give the same bits; the log tells them apart.
    assert "Resuming from step 4" in caplog.text
    assert "finished at step 8 after 4 step(s) in 2 call(s)" in caplog.text
    assert_same_state(resumed, state_one_go)
    # Checkpoints kept: the latest two plus every snapshot_freq (4), across both runs.
    assert checkpoints.list_steps(tmp_path) == [4, 6, 8]
    assert checkpoints.list_steps(workdir) == [6, 8]


def test_metrics_tensorboard_and_samples(one_go):
    workdir, _ = one_go
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train_loss" in r]
    assert train_steps == [2, 4, 6, 8]
    assert all(
        np.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in records if "train_loss" in r
    )
    assert [r["step"] for r in records if "eval_loss" in r] == [4, 8]
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    png = workdir / "samples" / "step_8.png"
    assert png.is_file()  # a sampler that cannot be built fails the run, never skips this
    from PIL import Image

    picture = np.asarray(Image.open(png))
    assert picture.shape[:2] == (256, 256) and picture.max() == 255


def test_nan_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop.host_batches

    def poisoned(config, split, batch_size, seed, start_step=0):
        for i, batch in enumerate(real(config, split, batch_size, seed, start_step), start_step):
            if split == "train" and i == 5:  # the batch of the 6th update
                batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
            yield batch

    monkeypatch.setattr(loop, "host_batches", poisoned)
    with pytest.raises(loop.TrainingDivergedError, match=r"diverged at step 6") as err:
        loop.train(tiny_config("training.n_iters=10"), tmp_path)
    assert "last good checkpoint is step 4" in str(err.value)
    assert checkpoints.list_steps(tmp_path) == [2, 4]
    step, ema = checkpoints.restore_for_inference(tmp_path, tiny_config())
    assert step == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(ema))


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_refuses_unknown_key_and_missing_file(tmp_path, capsys):
    code, err = run_cli(
        [
            "train",
            "--config",
            CONFIG,
            "--workdir",
            str(tmp_path),
            "--config.training.no_such_key=1",
        ],
        capsys,
    )
    assert code == 2 and "Unknown config key 'config.training.no_such_key'" in err
    code, err = run_cli(
        ["train", "--config", str(tmp_path / "absent.py"), "--workdir", str(tmp_path)], capsys
    )
    assert code == 2 and "Config file not found" in err and "absent.py" in err
    assert not (tmp_path / "checkpoints").exists()


def test_cli_names_architecture_mismatch(one_go, capsys):
    workdir, _ = one_go
    args = ["train", "--config", CONFIG, "--workdir", str(workdir)]
    code, err = run_cli(args + [f"--config.{o}" for o in TINY] + ["--config.model.nf=16"], capsys)
    assert code == 1
    assert "does not match the config's model" in err
    assert "Dense_2/kernel: checkpoint (2, 32), the config's model (2, 16)" in err
