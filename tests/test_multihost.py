"""Two processes on 127.0.0.1 (2 CPU devices each) train like one process with 4 devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import cache_env

from score_jax import checkpoints
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
    "training.eval_freq=100",
    "training.snapshot_freq=4",
    "training.snapshot_freq_for_preemption=100",
    "training.snapshot_sampling=False",
    "training.n_iters=6",
    "optim.warmup=2",
    "optim.lr=0.01",
]

# Runs the real CLI, then saves this process's copy of the final parameters.
WORKER = """
import sys, jax, numpy as np
from score_jax import cli
from score_jax.train import loop
real_train = loop.train
def train_and_dump(config, workdir, *args):
    state = real_train(config, workdir, *args)
    leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
    np.savez(f"{workdir}/params_process{jax.process_index()}.npz", *leaves)
    return state
loop.train = train_and_dump
sys.exit(cli.main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path, compilation_cache):
    workdir = tmp_path / "multihost"
    port = free_port()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        **cache_env(compilation_cache),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    procs = []
    for pid in range(2):
        cmd = [
            sys.executable,
            "-c",
            WORKER,
            "train",
            "--config",
            CONFIG,
            "--workdir",
            str(workdir),
            "--coordinator_address",
            f"127.0.0.1:{port}",
            "--num_processes",
            "2",
            "--process_id",
            str(pid),
            *[f"--config.{o}" for o in TINY],
        ]
        procs.append(
            subprocess.Popen(
                cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=240)[0])
        finally:
            proc.kill()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]

    params = [np.load(workdir / f"params_process{pid}.npz") for pid in range(2)]
    for name in params[0].files:
        np.testing.assert_array_equal(params[0][name], params[1][name])

    # Only process 0 logs: each step appears once, and there is one TensorBoard file.
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [2, 4, 6]
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert "%|" in outputs[0] and "%|" not in outputs[1]  # progress bar on process 0 only
    # Every process took part in saving (Orbax blocks otherwise); the kept steps are there.
    assert checkpoints.list_steps(workdir) == [4, 6]

    # One process with 4 devices, the same global batches and seed.
    state = loop.train(load_config(CONFIG, TINY), tmp_path / "single")
    single = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
    # The cross-process all-reduce may sum in another order: float32 roundoff, amplified
    # by Adam where a gradient entry is near 0 (measured: one entry of 1024 off by 8.5e-6,
    # the rest < 1e-6). atol 5e-5 is 0.5% of one step of lr 0.01; a wrong batch or a
    # missing pmean moves most entries by ~1e-3.
    for i, leaf in enumerate(single):
        np.testing.assert_allclose(params[0][f"arr_{i}"], leaf, rtol=1e-5, atol=5e-5)


def _start(pid: int, port: int, workdir, compilation_cache, *extra) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **cache_env(compilation_cache),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # fmt: skip
    cmd = [sys.executable, "-m", "score_jax", "train", "--config", CONFIG,
           "--workdir", str(workdir), "--coordinator_address", f"127.0.0.1:{port}",
           "--num_processes", "2", "--process_id", str(pid), *extra,
           *[f"--config.{o}" for o in TINY]]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_missing_process_is_reported_within_the_init_timeout(tmp_path, compilation_cache):
    """Process 1 never starts: process 0 stops after --init_timeout (JAX's default: 5 min)."""
    import time

    tic = time.monotonic()
    proc = _start(0, free_port(), tmp_path, compilation_cache, "--init_timeout", "5")
    try:
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode != 0, out[-3000:]
    assert "process 0 of 2 joining the run" in out and "--init_timeout=5 s" in out
    assert time.monotonic() - tic < 60


def test_a_dead_peer_stops_the_survivor_within_the_heartbeat_timeout(tmp_path, compilation_cache):
    """kill -9 of process 1 mid-run: process 0 exits (non-zero) soon after --heartbeat_timeout."""
    import time

    port, workdir = free_port(), tmp_path / "dead_peer"
    long_run = ["--config.training.n_iters=100000", "--heartbeat_timeout", "5"]
    procs = [_start(pid, port, workdir, compilation_cache, *long_run) for pid in range(2)]
    try:
        deadline = time.monotonic() + 180
        metrics = workdir / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert time.monotonic() < deadline and procs[0].poll() is None, "never trained"
            time.sleep(0.5)
        procs[1].kill()
        killed = time.monotonic()
        out = procs[0].communicate(timeout=120)[0]
        waited = time.monotonic() - killed
    finally:
        for proc in procs:
            proc.kill()
    assert procs[0].returncode != 0, out[-3000:]
    # Measured 4.7 s; with --heartbeat_timeout 50 the survivor waited ~40 s (JAX default: 100).
    assert waited < 20, (waited, out[-3000:])
