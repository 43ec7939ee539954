"""Loading ml_collections config files and applying `--config.a.b=VALUE` overrides.

A config file is a Python file with `get_config() -> ConfigDict`. Overrides name an existing
dotted key; a key that does not exist, or a value of the wrong type, is refused with the key
named, so a typo never silently trains the wrong model.

The configs shipped with the package (the repository's `configs/` folder, installed beside
`score_jax`) resolve from any working directory: `--config configs/digits/vp_ddpmpp.py` names the
shipped file whenever no such file exists relative to the working directory.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

import ml_collections


class ConfigError(ValueError):
    """A config file or override that cannot be used as given."""


# The repository's configs/ folder; a non-editable install puts it beside score_jax too.
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """`path` if it names a file; else, for `configs/...`, the shipped config of that name."""
    path = Path(path)
    if path.is_file():
        return path
    parts = path.parts
    if not path.is_absolute() and parts and parts[0] == "configs":
        shipped = SHIPPED_CONFIGS.joinpath(*parts[1:])
        if shipped.is_file():
            return shipped
    looked = f"relative to {Path.cwd()}"
    if not path.is_absolute():
        looked += f" and, for configs/..., among the shipped configs in {SHIPPED_CONFIGS}"
    raise ConfigError(
        f"Config file not found: {path} (expected a .py file with get_config(); looked {looked})."
    )


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """Imports `path` (see `resolve_config_path`) and returns its `get_config()`."""
    path = resolve_config_path(path)
    name = f"_score_jax_config_{abs(hash(str(path.resolve())))}"
    if path.suffix != ".py":
        raise ConfigError(
            f"--config {path}: a config is a Python file (.py) with get_config(), e.g. "
            "configs/digits/vp_ddpmpp.py; data files go in --config.data.path."
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Config files import their shared defaults by plain name (`from configs import ...` or a
    # sibling module), so the repository root and the file's folder must be importable.
    extra = [str(path.resolve().parent), str(_repo_root_of(path))]
    sys.path[:0] = extra
    try:
        spec.loader.exec_module(module)
    finally:
        for p in extra:
            sys.path.remove(p)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path} defines no get_config() function.")
    return module.get_config()


def _repo_root_of(path: Path) -> Path:
    """The folder that holds `configs/` above `path` (or the file's own folder)."""
    for parent in path.resolve().parents:
        if parent.name == "configs":
            return parent.parent
    return path.resolve().parent


def parse_value(text: str):
    """A Python literal (`64`, `1e-4`, `(16,)`, `True`) or, failing that, the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, value) -> None:
    """Sets `config.<dotted_key> = value`, refusing unknown keys and mismatched types."""
    *parents, leaf = dotted_key.split(".")
    node = config
    walked = []
    for part in parents:
        walked.append(part)
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ConfigError(f"Unknown config key 'config.{'.'.join(walked)}' in override.")
        node = node[part]
    if leaf not in node:
        known = ", ".join(sorted(node.keys()))
        raise ConfigError(f"Unknown config key 'config.{dotted_key}'. Keys at that level: {known}.")
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(old, tuple) and isinstance(value, int | float):
        value = (value,)
    # None is accepted anywhere: it is how a config says "not set" (e.g. eval.begin_ckpt).
    if old is not None and value is not None and type(old) is not type(value):
        raise ConfigError(
            f"config.{dotted_key} expects {type(old).__name__} (now {old!r}), "
            f"got {type(value).__name__} {value!r}."
        )
    with node.unlocked():
        node[leaf] = value


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file and applies overrides of the form `a.b=VALUE` (or `config.a.b=V`)."""
    config = load_config_file(path)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} must look like --config.a.b=VALUE.")
        key = key.removeprefix("--").removeprefix("config.")
        apply_override(config, key, parse_value(text))
    config.lock()
    return config
