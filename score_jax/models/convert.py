"""Official score_sde_pytorch weights -> our Flax variables (`score-jax convert` reads with these).

`from_pytorch(state_dict, config)` takes a bare or DataParallel (`module.`-prefixed) state_dict,
or a whole official checkpoint dict (`{'model', 'ema', 'optimizer', 'step'}`, whose `ema` holds
the shadow parameters as a list in `model.parameters()` order). Layouts change once here:
conv OIHW -> HWIO, Linear (out, in) -> (in, out), GroupNorm weight -> scale; NIN's W is already
(in, out). NCSN++'s `all_modules.<i>` list maps onto our modules in the order the forward pass
calls them, which is the order of the official list. Any missing, unexpected or misshapen key
fails with one error that names them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from score_jax.models import get_model
from score_jax.models.convert_ddpm import ddpm_from_pytorch
from score_jax.models.convert_ncsnv2 import ncsnv2_from_pytorch

_BUFFERS = ("sigmas",)


class ConversionError(ValueError):
    """Official weights that do not fit the model the config describes."""


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Removes DataParallel's 'module.' prefix from every key that has it."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _is_frozen(key: str, value: Any) -> bool:
    """Parameters the official EMA skips (requires_grad=False): the Fourier projection's W."""
    return key.endswith(".W") and np.ndim(_to_numpy(value)) == 1


def ema_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The model state_dict of an official checkpoint with its EMA shadow values put in.

    Shadow params follow `model.parameters()` (state_dict order without buffers), skipping
    parameters that do not require grad; those keep their `model` values.
    """
    model = strip_module_prefix(checkpoint["model"])
    shadow = list(checkpoint["ema"]["shadow_params"])
    trainable = [k for k, v in model.items() if k not in _BUFFERS and not _is_frozen(k, v)]
    if len(trainable) != len(shadow):
        raise ConversionError(
            f"The checkpoint's ema has {len(shadow)} shadow parameters but its model has "
            f"{len(trainable)} trainable parameters; the file is not an official score_sde "
            "checkpoint of one model."
        )
    out = dict(model)
    bad = []
    for key, value in zip(trainable, shadow, strict=True):
        if _to_numpy(value).shape != _to_numpy(model[key]).shape:
            bad.append(f"{key}: model {_to_numpy(model[key]).shape}, ema {_to_numpy(value).shape}")
        out[key] = value
    if bad:
        raise ConversionError("EMA shadow shapes differ from the model's: " + "; ".join(bad))
    return out


def _torch_leaf(name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """(our leaf name, array in our layout) for one official parameter."""
    if name == "weight":
        if array.ndim == 4:
            return "kernel", np.transpose(array, (2, 3, 1, 0))
        if array.ndim == 2:
            return "kernel", array.T
        return "scale", array
    return name, array


def _call_order(module: nn.Module, x: jax.ShapeDtypeStruct, labels) -> list[str]:
    """Names of the module's direct children in the order its forward pass first calls them."""
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        path = context.module.scope.path if context.module.scope is not None else ()
        if context.method_name == "__call__" and len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return next_fun(*args, **kwargs)

    def init():
        with nn.intercept_methods(record):
            return module.init(jax.random.PRNGKey(0), jnp.zeros(x.shape, x.dtype), labels)

    jax.eval_shape(init)
    return order


def _example_inputs(config: ml_collections.ConfigDict):
    size, channels = config.data.image_size, config.data.num_channels
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    positional = str(config.model.get("embedding_type", "fourier")).lower() == "positional"
    labels = jnp.zeros((1,), jnp.int32) if positional else jnp.ones((1,), jnp.float32)
    return x, labels


def ncsnpp_from_pytorch(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """{'params': ...} for NCSNpp(config) from an official NCSN++ state_dict (no prefix)."""
    module = get_model(config)
    x, labels = _example_inputs(config)
    expected_tree = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), labels)
    )["params"]
    expected = {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(expected_tree).items()}
    with_params = {p[0] for p in expected}
    order = [name for name in _call_order(module, x, labels) if name in with_params]

    converted: dict[tuple, np.ndarray] = {}
    problems: list[str] = []
    mismatched: set[str] = set()
    for key, value in state_dict.items():
        if key in _BUFFERS:
            continue
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "all_modules" or not parts[1].isdigit():
            problems.append(f"unexpected key {key}")
            continue
        index = int(parts[1])
        if index >= len(order):
            problems.append(f"unexpected key {key} (the model has {len(order)} modules)")
            continue
        leaf, array = _torch_leaf(parts[-1], _to_numpy(value))
        path = (order[index], *parts[2:-1], leaf)
        if path not in expected:
            problems.append(f"unexpected key {key} (no parameter {'/'.join(path)})")
        elif tuple(array.shape) != expected[path]:
            mismatched.add(key)
            problems.append(
                f"shape mismatch for {key}: checkpoint {tuple(_to_numpy(value).shape)}, "
                f"model expects {expected[path]} as {'/'.join(path)}"
            )
        else:
            converted[path] = array
    index_of = {name: i for i, name in enumerate(order)}
    for path in expected:
        key = f"all_modules.{index_of[path[0]]}.{_torch_name(path)}"
        if path not in converted and key not in mismatched:
            problems.append(f"missing key {key}")
    if problems:
        raise ConversionError(
            f"The state_dict does not fit NCSN++ as config.model describes it "
            f"({len(problems)} problem(s)): " + "; ".join(problems)
        )
    flat = {p: jnp.asarray(a, dtype=jnp.float32) for p, a in converted.items()}
    return {"params": traverse_util.unflatten_dict(flat)}


def _torch_name(path: tuple) -> str:
    """The official key suffix (after all_modules.<i>.) of one of our parameter paths."""
    leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    return ".".join([*path[1:-1], leaf])


def from_pytorch(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict, use_ema: bool = True
) -> dict[str, Any]:
    """Our variables ({'params': ...}) from official weights for the model config.model.name.

    `state_dict` may be a bare or 'module.'-prefixed state_dict, or an official checkpoint dict;
    for the latter the EMA weights are used when `use_ema` (the ones the paper samples with).
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        if use_ema and "ema" in state_dict:
            state_dict = ema_state_dict(state_dict)
        else:
            state_dict = state_dict["model"]
    state_dict = {k: _to_numpy(v) for k, v in strip_module_prefix(state_dict).items()}
    name = str(config.model.name).lower()
    if name == "ncsnpp":
        return ncsnpp_from_pytorch(state_dict, config)
    if name == "ddpm":
        return ddpm_from_pytorch(state_dict, config)
    if name.startswith("ncsnv2_"):
        return ncsnv2_from_pytorch(state_dict, config)
    raise ConversionError(
        f"config.model.name={name!r} has no converter; official weights exist for "
        "'ncsnpp', 'ddpm' and 'ncsnv2_64/128/256'."
    )


def load_torch_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Reads an official .pth safely (weights_only=True: no arbitrary code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            "Reading .pth checkpoints needs PyTorch: pip install 'score-jax[torch]'."
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"Could not read {path} as a PyTorch checkpoint: {err}") from err


def read_official_checkpoint(
    config: ml_collections.ConfigDict, checkpoint: str | Path
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(step, params, ema_params) of an official .pth, as our parameter trees.

    A full checkpoint gives its raw and EMA weights and its step; a bare state_dict is both,
    at step 0."""
    loaded = load_torch_checkpoint(checkpoint)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{checkpoint} holds a {type(loaded).__name__}, not a state_dict.")
    is_full = "model" in loaded and isinstance(loaded["model"], Mapping)
    params = from_pytorch(loaded, config, use_ema=False)["params"]
    ema_params = from_pytorch(loaded, config, use_ema=True)["params"] if is_full else params
    step = int(_to_numpy(loaded.get("step", 0))) if is_full else 0
    return step, params, ema_params


__all__ = [
    "ConversionError",
    "ema_state_dict",
    "from_pytorch",
    "load_torch_checkpoint",
    "ncsnpp_from_pytorch",
    "read_official_checkpoint",
    "strip_module_prefix",
]
