"""Transparent huge pages for XLA:CPU's buffers: the `score-jax` command restarts itself with them.

XLA:CPU allocates a program's temporaries afresh on every call, and glibc hands allocations
this large out as new mappings, so every call page-faults its whole working set in 4 KiB pages:
86,000 faults, ~100 ms, per training call of the small CIFAR-10 configs (337 MiB of temporaries;
a step is ~330 ms). With glibc's `glibc.malloc.hugetlb=1` tunable, malloc asks for transparent
huge pages and the same call takes ~530 faults. The tunable is read when a process starts, so
the command line re-executes itself once with it set (Linux, glibc >= 2.35, THP not disabled,
and only where JAX will run on the CPU: never on a GPU or TPU host, see backend_probe.py);
set SCORE_JAX_HUGEPAGES=0 to opt out. In a notebook, start the kernel with the variable set:
GLIBC_TUNABLES=glibc.malloc.hugetlb=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from score_jax import backend_probe

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. "glibc 2.36"
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, OSError, ValueError):  # not glibc, or not POSIX
        return None


def _thp_mode() -> str | None:
    """The selected transparent-huge-page mode ('always', 'madvise', 'never'), if readable."""
    try:
        with open(_THP_SETTING) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def environment_with_hugepages(
    environ: Mapping[str, str],
    platform: str,
    glibc: tuple[int, int] | None,
    thp_mode: str | None,
) -> dict[str, str] | None:
    """`environ` plus the hugetlb tunable, or None when it is set already, opted out of with
    SCORE_JAX_HUGEPAGES=0, or cannot act (not Linux, glibc < 2.35, THP disabled or absent)."""
    if environ.get("SCORE_JAX_HUGEPAGES", "1") == "0":
        return None
    if platform != "linux" or glibc is None or glibc < (2, 35) or thp_mode in (None, "never"):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec_with_hugepages() -> None:
    """Replaces this process by the same command line with the tunable set, when it helps.

    Call it first thing in a command's entry point: nothing before it survives."""
    if not backend_probe.will_run_on_cpu():
        return
    env = environment_with_hugepages(os.environ, sys.platform, _glibc_version(), _thp_mode())
    if env is None or not sys.executable:
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # cannot restart (e.g. a sandbox forbids exec): run as we are
        return
