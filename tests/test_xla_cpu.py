"""score_jax.xla_cpu: XLA:CPU's YNNPACK fusions are switched off on import, and only then."""

import os
import subprocess
import sys
import textwrap

import pytest

from score_jax import backend_probe, xla_cpu

X86, JAXLIB = "x86_64", (0, 10)


def test_appends_the_flag_once_and_keeps_the_other_flags(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_jax_has_compiled", lambda: False)
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: JAXLIB)
    monkeypatch.setattr(xla_cpu.platform, "machine", lambda: X86)
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "HOME": "/h"}
    assert xla_cpu.prefer_xla_kernels(environ)
    expected = f"--xla_force_host_platform_device_count=4 {xla_cpu.FLAG}"
    assert environ == {"XLA_FLAGS": expected, "HOME": "/h"}
    assert not xla_cpu.prefer_xla_kernels(environ)  # already there: not appended twice
    assert environ["XLA_FLAGS"] == expected
    fresh = {}
    assert xla_cpu.prefer_xla_kernels(fresh) and fresh == {"XLA_FLAGS": xla_cpu.FLAG}


@pytest.mark.parametrize(
    "environ, machine, jaxlib, compiled",
    [
        ({"SCORE_JAX_CPU_YNNPACK": "1"}, X86, JAXLIB, False),  # opted out
        (
            {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"},
            X86,
            JAXLIB,
            False,
        ),
        ({}, "arm64", JAXLIB, False),  # not measured there
        ({}, X86, (0, 9), False),  # may not know the flag: XLA would abort
        ({}, X86, (0, 12), False),  # not known to have it either
        ({}, X86, None, False),
        ({}, X86, JAXLIB, True),  # too late: XLA has read its flags
    ],
)
def test_leaves_xla_flags_alone(environ, machine, jaxlib, compiled):
    assert not xla_cpu.should_disable_ynnpack(environ, machine, jaxlib, compiled)


_PROBE = textwrap.dedent(
    """
    import os, jax, jax.numpy as jnp, score_jax
    x, w = jnp.ones((16, 32, 32, 32)), jnp.ones((3, 3, 32, 32))
    conv = lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    hlo = jax.jit(conv).lower(x, w).compile().as_text()
    print(os.environ.get("XLA_FLAGS", ""), "|", "__ynn_fusion" in hlo)
    """
)


@pytest.mark.skipif(xla_cpu.platform.machine().lower() not in ("x86_64", "amd64"), reason="x86")
def test_importing_score_jax_compiles_without_ynnpack_fusions():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
    env["JAX_PLATFORMS"] = "cpu"

    def probe(extra):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], env={**env, **extra}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    assert probe({}) == f"{xla_cpu.FLAG} | False"
    # Opting out leaves XLA's default, which fuses this convolution into YNNPACK.
    assert probe({xla_cpu.OPT_OUT: "1"}) == "| True"


@pytest.mark.parametrize(
    "platforms, plugins, cpu",
    [
        ("cpu", [], True),
        ("CPU", ["jax_cuda12_plugin"], True),  # asked for explicitly: the plugin is unused
        ("cuda", [], False),
        ("tpu,cpu", [], False),  # the first entry is the default backend
        ("", ["jax_cuda12_plugin"], False),
        ("", ["libtpu"], False),
        ("", [], True),
    ],
)
def test_default_backend_decision(platforms, plugins, cpu):
    assert backend_probe.default_backend_is_cpu(platforms, plugins) is cpu


def test_never_on_an_accelerator_host():
    assert not xla_cpu.should_disable_ynnpack({}, X86, JAXLIB, False, runs_on_cpu=False)


_ENV_PROBE = "import os, score_jax; print(repr(os.environ.get('XLA_FLAGS')))"


def test_import_changes_no_environment_where_jax_will_use_an_accelerator(tmp_path):
    """JAX_PLATFORMS=tpu, or no JAX_PLATFORMS and a CUDA plugin installed: XLA_FLAGS untouched."""
    plugin = tmp_path / "jax_plugins" / "jax_cuda12_plugin"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    for extra in ({"JAX_PLATFORMS": "tpu"}, {"PYTHONPATH": str(tmp_path)}):
        out = subprocess.run(
            [sys.executable, "-c", _ENV_PROBE], env={**env, **extra}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "None", extra
