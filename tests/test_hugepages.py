"""score_jax.hugepages: when the command restarts itself with glibc's hugetlb tunable, and that
the restart keeps its command line."""

import os
import subprocess
import sys

import pytest

from score_jax import hugepages

LINUX = ("linux", (2, 36), "madvise")


def test_adds_the_tunable_and_keeps_the_rest_of_the_environment():
    env = hugepages.environment_with_hugepages({"PATH": "/bin"}, *LINUX)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = hugepages.environment_with_hugepages(
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, *LINUX
    )
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize(
    "environ, platform, glibc, thp",
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, *LINUX),  # the user's choice stands
        ({"SCORE_JAX_HUGEPAGES": "0"}, *LINUX),  # opted out
        ({}, "darwin", None, None),
        ({}, "linux", None, "madvise"),  # musl: no glibc tunables
        ({}, "linux", (2, 34), "madvise"),  # tunable added in glibc 2.35
        ({}, "linux", (2, 36), "never"),  # THP disabled: nothing to gain
        ({}, "linux", (2, 36), None),  # no THP in this kernel
    ],
)
def test_no_restart_where_it_cannot_help_or_is_not_wanted(environ, platform, glibc, thp):
    assert hugepages.environment_with_hugepages(environ, platform, glibc, thp) is None


def test_restart_sets_the_tunable_once_and_keeps_the_arguments():
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    can = hugepages.environment_with_hugepages(
        environ, sys.platform, hugepages._glibc_version(), hugepages._thp_mode()
    )
    if can is None:
        pytest.skip("this machine has no glibc >= 2.35 with transparent huge pages")
    script = (
        "import os, sys\n"
        "print('started', flush=True)\n"
        "from score_jax.hugepages import reexec_with_hugepages\n"
        "reexec_with_hugepages()\n"
        "print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "a b", "--c=1"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # Two starts (before and after the restart), then the restarted process's view.
    assert out == ["started", "started", "glibc.malloc.hugetlb=1 ['a b', '--c=1']"]


def test_no_restart_on_an_accelerator_host_or_for_help(monkeypatch):
    from score_jax import backend_probe, cli

    restarts = []
    monkeypatch.setattr(hugepages.os, "execve", lambda *args: restarts.append(args))
    monkeypatch.setattr(hugepages, "environment_with_hugepages", lambda *a: {"X": "1"})
    monkeypatch.setattr(backend_probe, "will_run_on_cpu", lambda environ=None: False)
    hugepages.reexec_with_hugepages()
    assert restarts == []
    monkeypatch.setattr(backend_probe, "will_run_on_cpu", lambda environ=None: True)
    hugepages.reexec_with_hugepages()
    assert len(restarts) == 1  # the same set-up restarts where JAX runs on the CPU
    monkeypatch.setattr(cli.sys, "argv", ["score-jax", "train", "--help"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0 and len(restarts) == 1
