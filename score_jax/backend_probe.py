"""Whether JAX will run on the CPU, decided before any JAX backend is started.

CPU-only tuning (xla_cpu.py's XLA flag, hugepages.py's restart) must act before XLA starts and
must never touch a GPU or TPU host. Starting a backend to ask would be too late for the flag and
slow (it initialises every accelerator), so the answer comes from what decides JAX's default
backend: JAX_PLATFORMS (or jax.config.jax_platforms), whose first entry is the default, and
otherwise whether an accelerator plugin (CUDA, ROCm, TPU) is installed.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterable, Mapping

# Modules whose presence makes JAX choose an accelerator when JAX_PLATFORMS is unset.
_ACCELERATOR_MODULES = ("libtpu",)
_PLUGIN_PREFIXES = ("jax_cuda", "jax_rocm", "jax_tpu")


def installed_accelerator_plugins() -> list[str]:
    """Names of the installed JAX accelerator plugins (jax_plugins.* and libtpu), not imported."""
    found = [name for name in _ACCELERATOR_MODULES if importlib.util.find_spec(name)]
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        for module in pkgutil.iter_modules(list(spec.submodule_search_locations)):
            if module.name.startswith(_PLUGIN_PREFIXES):
                found.append(module.name)
    return found


def configured_platforms(environ: Mapping[str, str]) -> str:
    """The platform list JAX will use: jax.config.jax_platforms if JAX is imported and it is
    set, else JAX_PLATFORMS (or the older JAX_PLATFORM_NAME); '' when nothing is set."""
    jax = sys.modules.get("jax")
    configured = getattr(getattr(jax, "config", None), "jax_platforms", None) if jax else None
    if configured:
        return str(configured)
    return environ.get("JAX_PLATFORMS", "") or environ.get("JAX_PLATFORM_NAME", "")


def default_backend_is_cpu(platforms: str, accelerator_plugins: Iterable[str]) -> bool:
    """True when the first configured platform is 'cpu', or none is configured and no
    accelerator plugin is installed."""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not list(accelerator_plugins)


def will_run_on_cpu(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process's JAX default backend will be the CPU (see the module docstring)."""
    environ = os.environ if environ is None else environ
    return default_backend_is_cpu(configured_platforms(environ), installed_accelerator_plugins())
