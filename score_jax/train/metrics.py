"""Metrics to `<workdir>/metrics.jsonl` and TensorBoard event files (tensorboardX, no TF).

Only process 0 writes; on the other processes the writer does nothing. A run that resumes at
step S first forgets what an interrupted run logged after its last checkpoint: it drops the
records with step > S from `metrics.jsonl` (rewritten atomically) and opens a new event file
that starts with TensorBoard's purge marker (a SessionLog START at step S + 1, which hides the
older files' events from step S + 1 on), so each step appears once in both after any number of
interruptions. Both are written synchronously and flushed per call, so whatever was logged
before a checkpoint is on disk before that checkpoint is, even after `kill -9`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog

log = logging.getLogger(__name__)


def truncate_jsonl(path: Path, last_step: int) -> int:
    """Drops the records of `path` with step > `last_step` (and torn lines); returns how many.

    The file is replaced atomically, so a crash here leaves either the old or the new file."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= last_step]
    if len(kept) == len(lines):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for line in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(lines) - len(kept)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line torn by a crash mid-write
        return None


class _EventFile:
    """One synchronous TensorBoard event file that supersedes earlier ones from `first_step` on."""

    def __init__(self, logdir: Path, first_step: int):
        logdir.mkdir(parents=True, exist_ok=True)
        # The nanosecond suffix orders files made within one second and keeps a new file from
        # overwriting one of the same second (the name has whole seconds only).
        self._writer = EventsWriter(str(logdir / "events"), f".{time.time_ns()}")
        self._event = Event
        start = SessionLog(status=SessionLog.START)
        self._writer.write_event(Event(wall_time=time.time(), step=first_step, session_log=start))
        self._writer.flush()

    def write(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        for name, value in values.items():
            event = self._event(wall_time=now, step=step, summary=summary.scalar(name, value))
            self._writer.write_event(event)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MetricsWriter:
    """write(step, {"name": value}) appends one JSON line and one scalar per value.

    `start_step` is the step the run starts (or resumes) from: records after it are dropped."""

    def __init__(self, workdir: str | Path, enabled: bool | None = None, start_step: int = 0):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            dropped = truncate_jsonl(workdir / "metrics.jsonl", start_step)
            if dropped:
                log.info(
                    "Dropped %d record(s) after step %d from %s (logged after the last "
                    "checkpoint by the interrupted run).",
                    dropped,
                    start_step,
                    workdir / "metrics.jsonl",
                )
            self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._tb = _EventFile(workdir / "tensorboard", start_step + 1)

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        self._tb.write(int(step), values)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
