"""Metrics to `<workdir>/metrics.jsonl` and TensorBoard event files (tensorboardX, no TF).

Only process 0 writes; on the other processes the writer does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax


class MetricsWriter:
    """write(step, {"name": value}) appends one JSON line and one scalar per value."""

    def __init__(self, workdir: str | Path, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
