"""Interrupted training resumes exactly, and proves it: real `python -m score_jax train`
processes are killed (-9 in the middle of an asynchronous checkpoint save) or stopped (SIGINT,
SIGTERM twice); the resumed run must name its start step, run only the remaining steps, leave
metrics.jsonl and TensorBoard with every logged step exactly once, and end bitwise equal to a
run of the same seed that never stopped, with n_jitted_steps changed at each restart.

The moments of the interruptions are made deterministic by a sitecustomize module the tests
write (the library has no test hooks): it can pause training after a given step until the test
has sent its signal, and hold the rename that commits a checkpoint of a given step.
"""

import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import cache_env

from score_jax import checkpoints
from score_jax.config import load_config
from score_jax.errors import EXIT_PREEMPTED
from score_jax.train import loop

pytestmark = pytest.mark.usefixtures("compilation_cache")

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy/mixture_vp.py")
N_ITERS = 8
# log_freq 2 and eval_freq 4 suit both n_jitted_steps=1 and 2, so every run logs the same steps.
TINY = [
    "model.nf=32",
    "training.batch_size=16",
    "eval.batch_size=16",
    f"training.n_iters={N_ITERS}",
    "training.n_jitted_steps=2",
    "training.log_freq=2",
    "training.eval_freq=4",
    "training.snapshot_freq=4",
    "training.snapshot_freq_for_preemption=2",
    "training.snapshot_sampling=False",
    "optim.warmup=2",
    "optim.lr=0.01",
]
LOGGED = {"train_loss": [2, 4, 6, 8], "grad_norm": [2, 4, 6, 8], "eval_loss": [4, 8]}

SITECUSTOMIZE = """
import importlib.abc, importlib.util, json, os, sys, time
from pathlib import Path

_SPEC = json.loads(os.environ.get("RESUME_TEST_HOOKS", "{}"))


def _hold(name):
    # Leaves a marker file and waits until the test writes <name>.go (at most 120 s).
    Path(_SPEC["dir"], name).touch()
    go, deadline = Path(_SPEC["dir"], name + ".go"), time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _patch_loop(loop):
    make = loop.make_train_step

    def make_paused(*args, **kwargs):
        step_fn = make(*args, **kwargs)

        def paused(state, images):
            state, metrics = step_fn(state, images)
            if int(state.step.addressable_data(0)) == _SPEC["pause_after_step"]:
                _hold("paused")
            return state, metrics

        return paused

    loop.make_train_step = make_paused


def _patch_atomicity(atomicity):
    # Orbax writes a checkpoint into a temporary folder, then renames it (in a background
    # thread); holding the rename keeps the save in flight for as long as the test needs.
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def held_finalize(self, *args, **kwargs):
        if self.get_final().name == str(_SPEC["hold_commit_of_step"]):
            _hold("saving")
        return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = held_finalize


_PATCHES = {}
if "pause_after_step" in _SPEC:
    _PATCHES["score_jax.train.loop"] = _patch_loop
if "hold_commit_of_step" in _SPEC:
    _PATCHES["orbax.checkpoint._src.path.atomicity"] = _patch_atomicity


class _PatchOnImport(importlib.abc.MetaPathFinder):
    # Patches a module right after its first import, so that nothing is imported early here.
    def find_spec(self, name, path, target=None):
        if name not in _PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        exec_module, patch = spec.loader.exec_module, _PATCHES.pop(name)

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())
"""


def tiny_config(*overrides):
    return load_config(CONFIG, [*TINY, *overrides])


def host_state(state):
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _records(path: Path):
    """The serialized events of one TFRecord file (length, CRC, data, CRC; CRCs not checked)."""
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        yield data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4


def read_tensorboard(workdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows it: files in name order, and a
    SessionLog START at step s hides the events read before it with step >= s (TensorBoard's
    EventAccumulator purge rule; tensorboard itself is not a dependency)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        for record in _records(path):
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for tag, points in scalars.items():
                    scalars[tag] = [(s, v) for s, v in points if s < event.step]
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def assert_logged_once(workdir: Path, reference: Path):
    """metrics.jsonl and TensorBoard hold each logged step once, with the reference's values."""
    records = read_metrics(workdir)
    for tag, steps in LOGGED.items():
        assert [r["step"] for r in records if tag in r] == steps, (tag, records)
    # The same records with the same values: losses of bitwise-equal states on the same data.
    assert records == read_metrics(reference)
    board = read_tensorboard(workdir)
    assert {tag: [s for s, _ in points] for tag, points in board.items()} == LOGGED
    for tag, points in board.items():
        from_jsonl = [np.float32(r[tag]) for r in records if tag in r]
        assert [np.float32(v) for _, v in points] == from_jsonl, tag
    assert board == read_tensorboard(reference)


def assert_same_state(a, b):
    # Same programs on the same devices, data and keys: the results must be bitwise equal.
    for x, y in zip(jax.tree.leaves(host_state(a)), jax.tree.leaves(host_state(b)), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(workdir, final state) of the N_ITERS steps run in one go, shared by the module."""
    workdir = tmp_path_factory.mktemp("one_go")
    return workdir, loop.train(tiny_config(), workdir)


def resume_in_process(workdir: Path, monkeypatch, caplog, *overrides):
    """Resumes to N_ITERS; returns (state, steps the compiled calls ran, log text)."""
    ran = []
    make = loop.make_train_step

    def counting(*args, **kwargs):
        step_fn = make(*args, **kwargs)

        def counted(state, images):
            ran.append(images.shape[0])
            return step_fn(state, images)

        return counted

    monkeypatch.setattr(loop, "make_train_step", counting)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=loop.__name__):
        state = loop.train(tiny_config(*overrides), workdir)
    return state, sum(ran), caplog.text


def start_training(workdir: Path, cache, hooks: dict, *overrides) -> subprocess.Popen:
    """`python -m score_jax train` on the tiny config, with the test hooks; output to a file."""
    hook_dir = workdir.parent / f"{workdir.name}_hooks"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    for marker in hook_dir.glob("*"):
        if marker.name != "sitecustomize.py":
            marker.unlink()
    env = {
        **os.environ,
        **cache_env(cache),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")])),
        "RESUME_TEST_HOOKS": json.dumps({"dir": str(hook_dir), **hooks}),
        "SCORE_JAX_HUGEPAGES": "0",  # no re-exec: the test signals the process it started
    }
    args = [f"--config.{o}" for o in [*TINY, *overrides]]
    cmd = [
        sys.executable,
        "-m",
        "score_jax",
        "train",
        "--config",
        CONFIG,
        "--workdir",
        str(workdir),
    ]
    log_file = open(hook_dir / "output.txt", "w")  # noqa: SIM115 (closed by finish())
    proc = subprocess.Popen([*cmd, *args], env=env, cwd=REPO, stdout=log_file, stderr=log_file)
    proc.hook_dir, proc.log_file = hook_dir, log_file
    return proc


def output(proc) -> str:
    return (proc.hook_dir / "output.txt").read_text()


def wait_for(proc, condition, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{output(proc)}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{output(proc)}"
        time.sleep(0.05)


def marker(proc, name: str) -> bool:
    return (proc.hook_dir / name).exists()


def release(proc, name: str) -> None:
    (proc.hook_dir / f"{name}.go").touch()


def finish(proc, timeout: float = 120) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log_file.close()
    return output(proc)


def test_metrics_writer_drops_what_follows_the_resume_step(tmp_path):
    """The cheap path of the resume rule: records after the resume step leave metrics.jsonl
    (also a line torn by a kill mid-write) and TensorBoard, whatever the order of the files."""
    from score_jax.train.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path, enabled=True, start_step=0)
    for step in range(1, 7):
        writer.write(step, {"loss": step})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # torn by kill -9
    writer = MetricsWriter(tmp_path, enabled=True, start_step=2)
    for step in range(3, 5):
        writer.write(step, {"loss": 10 * step})
    writer.close()
    writer = MetricsWriter(tmp_path, enabled=True, start_step=4)  # resumed, nothing logged
    writer.close()
    expected = [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == expected
    assert read_tensorboard(tmp_path) == {"loss": expected}
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 3


def test_kill_during_async_save_then_resume_with_other_n_jitted_steps(
    reference, tmp_path, compilation_cache, monkeypatch, caplog
):
    workdir = tmp_path / "run"
    proc = start_training(workdir, compilation_cache, {"hold_commit_of_step": 4})
    try:
        # The save of step 4 is held; training goes on to step 6 (logged, past the last
        # finished checkpoint, 2), whose own save then waits for the held one.
        wait_for(proc, lambda: marker(proc, "saving"), "held save of step 4")
        metrics = workdir / "metrics.jsonl"
        wait_for(proc, lambda: '"step": 6,' in metrics.read_text(), "metrics of step 6")
        proc.kill()
    finally:
        finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoints.list_steps(workdir) == [2]
    in_flight = [p.name for p in checkpoints.checkpoint_dir(workdir).iterdir()]
    assert any(name.startswith("4.") and "tmp" in name for name in in_flight), in_flight
    assert max(r["step"] for r in read_metrics(workdir)) == 6

    state, ran, text = resume_in_process(workdir, monkeypatch, caplog, "training.n_jitted_steps=1")
    assert f"Resuming from step 2 (checkpoint {checkpoints.checkpoint_dir(workdir) / '2'})" in text
    assert ran == N_ITERS - 2
    assert f"Training finished at step {N_ITERS} after {N_ITERS - 2} step(s) in" in text
    assert_same_state(state, reference[1])
    assert_logged_once(workdir, reference[0])
    assert checkpoints.list_steps(workdir) == [4, 6, 8]


def test_sigint_then_sigterm_twice_save_and_resume(
    reference, tmp_path, compilation_cache, monkeypatch, caplog
):
    workdir = tmp_path / "run"
    # No periodic saves: the checkpoints below come from the signals alone.
    rare_saves = ["training.snapshot_freq=100", "training.snapshot_freq_for_preemption=100"]

    proc = start_training(workdir, compilation_cache, {"pause_after_step": 2}, *rare_saves)
    try:
        wait_for(proc, lambda: marker(proc, "paused"), "step 2")
        proc.send_signal(signal.SIGINT)
        release(proc, "paused")
    finally:
        out = finish(proc)
    assert proc.returncode == 130, out  # Ctrl-C's exit status, after the save
    assert "SIGINT: saved step 2" in out and "after 2 step(s) in 1 call(s)" in out, out
    assert checkpoints.list_steps(workdir) == [2]

    # Resumed with one step per call; the second SIGTERM lands while step 4's save is held.
    hooks = {"pause_after_step": 4, "hold_commit_of_step": 4}
    proc = start_training(
        workdir, compilation_cache, hooks, *rare_saves, "training.n_jitted_steps=1"
    )
    try:
        wait_for(proc, lambda: marker(proc, "paused"), "step 4")
        proc.send_signal(signal.SIGTERM)
        release(proc, "paused")
        wait_for(proc, lambda: marker(proc, "saving"), "held save of step 4")
        proc.send_signal(signal.SIGTERM)
        wait_for(proc, lambda: "already stopping" in output(proc), "the second SIGTERM's note")
        release(proc, "saving")
    finally:
        out = finish(proc)
    assert proc.returncode == EXIT_PREEMPTED, out  # saved, but the work is not finished
    assert f"Resuming from step 2 (checkpoint {checkpoints.checkpoint_dir(workdir) / '2'})" in out
    assert "SIGTERM: saved step 4" in out and "after 2 step(s) in 2 call(s)" in out, out
    assert checkpoints.list_steps(workdir) == [2, 4]

    state, ran, text = resume_in_process(workdir, monkeypatch, caplog, *rare_saves)
    assert "Resuming from step 4" in text
    assert ran == N_ITERS - 4
    assert_same_state(state, reference[1])
    assert_logged_once(workdir, reference[0])
