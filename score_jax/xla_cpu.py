"""XLA:CPU's own kernels instead of its YNNPACK library fusions, set when score_jax is imported.

jaxlib 0.10 hands convolutions, matrix products and reductions on x86 CPUs to YNNPACK by
default. On NCSN++ (config S of benchmarks/README.md, batch 16, 2 cores) that made the forward
pass 1.7x slower (130 vs 76 ms) and a kernel gradient 2x slower (10.8 vs 4.9 ms for a 3x3 conv
on 16x32x32x64) than XLA's Eigen kernels. XLA reads XLA_FLAGS once, when it compiles its first
program, so importing score_jax appends `--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK
fusions) to XLA_FLAGS if nothing has been compiled yet. It leaves XLA_FLAGS alone when the flag
is already there (yours wins), when JAX's default backend will not be the CPU (a GPU or TPU host:
see backend_probe.py; nothing there is touched), on CPUs other than x86-64 (not measured), with a
jaxlib outside 0.10-0.11 (releases known to have the flag; XLA aborts on unknown flags), and when
SCORE_JAX_CPU_YNNPACK=1.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

import jaxlib.version
from jax._src import xla_bridge

from score_jax import backend_probe

FLAG = "--xla_cpu_experimental_ynn_fusion_type="
OPT_OUT = "SCORE_JAX_CPU_YNNPACK"


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = jaxlib.version.__version__.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def _jax_has_compiled() -> bool:
    # A JAX without this private helper: assume nothing has been compiled.
    initialized = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(initialized()) if initialized is not None else False


def should_disable_ynnpack(
    environ: MutableMapping[str, str],
    machine: str,
    jaxlib_version: tuple[int, int] | None,
    jax_has_compiled: bool,
    runs_on_cpu: bool = True,
) -> bool:
    """Whether to append FLAG to XLA_FLAGS (the decision table in the module docstring)."""
    if not runs_on_cpu or environ.get(OPT_OUT, "") not in ("", "0"):
        return False
    if "xla_cpu_experimental_ynn_fusion_type" in environ.get("XLA_FLAGS", ""):
        return False
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    if jaxlib_version is None or not (0, 10) <= jaxlib_version < (0, 12):
        return False
    return not jax_has_compiled


def prefer_xla_kernels(environ: MutableMapping[str, str] | None = None) -> bool:
    """Append FLAG to XLA_FLAGS when `should_disable_ynnpack`; returns whether it did."""
    environ = os.environ if environ is None else environ
    decision = should_disable_ynnpack(
        environ,
        platform.machine(),
        _jaxlib_version(),
        _jax_has_compiled(),
        backend_probe.will_run_on_cpu(environ),
    )
    if decision:
        environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {FLAG}".strip()
    return decision
