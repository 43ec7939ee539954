"""Official score_sde_pytorch DDPM weights -> our Flax `DDPM` variables.

Also holds the helpers shared by the other converters of this family: turning one PyTorch
tensor into our layout, and checking a converted flat dict against the model's own parameter
shapes so that every missing, unexpected or mis-shaped key is named in one error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from score_jax.models import get_model
from score_jax.models.ddpm import module_names, sigma_table

Path = tuple[str, ...]


def torch_leaf(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """One PyTorch parameter -> (our leaf name, array in our layout).

    Conv weights OIHW -> HWIO, Linear weights (out, in) -> (in, out), norm weights -> 'scale'.
    Other names pass unchanged: NIN's W (already (in, out)) and b, InstanceNorm++ alpha/gamma/beta.
    """
    if leaf == "weight":
        if array.ndim == 4:
            return "kernel", np.transpose(array, (2, 3, 1, 0))
        if array.ndim == 2:
            return "kernel", array.T
        return "scale", array
    return leaf, array


def param_shapes(module: nn.Module, config: ml_collections.ConfigDict, label_dtype) -> dict:
    """Flat {path: shape} of the module's parameters, without computing anything."""
    size, channels = config.data.image_size, config.data.num_channels
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), label_dtype)
    shapes = jax.eval_shape(
        lambda k, a, b: module.init(k, a, b, train=False), jax.random.key(0), x, labels
    )
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(shapes["params"]).items()}


def nest_checked(
    converted: Mapping[Path, tuple[str, np.ndarray]],
    expected: Mapping[Path, tuple[int, ...]],
    unexpected: list[str],
    what: str,
) -> dict[str, Any]:
    """Nests {path: (torch_key, array)} into a params tree after checking it against `expected`.

    Raises ValueError naming every torch key with no place in the model, every model parameter
    with no torch key, and every shape mismatch.
    """
    problems = [f"unexpected key {key!r}" for key in unexpected]
    for path, (key, array) in converted.items():
        if path not in expected:
            problems.append(f"unexpected key {key!r} (would be {'/'.join(path)})")
        elif tuple(array.shape) != tuple(expected[path]):
            problems.append(
                f"shape of {key!r}: expected {tuple(expected[path])} in our layout for "
                f"{'/'.join(path)}, found {tuple(array.shape)}"
            )
    problems += [
        f"missing: no checkpoint key for parameter {'/'.join(path)} {tuple(shape)}"
        for path, shape in expected.items()
        if path not in converted
    ]
    if problems:
        raise ValueError(
            f"The state_dict does not fit the {what} model built from this config "
            f"({len(problems)} problems):\n  " + "\n  ".join(problems)
        )
    flat = {path: jnp.asarray(array, dtype=jnp.float32) for path, (_, array) in converted.items()}
    return traverse_util.unflatten_dict(flat)


def check_sigmas(sigmas: np.ndarray, config: ml_collections.ConfigDict) -> None:
    """The checkpoint's noise levels must be the ones the config gives, or scores would be off."""
    expected = sigma_table(config)
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.shape != expected.shape or not np.allclose(sigmas, expected, rtol=1e-5):
        raise ValueError(
            f"The checkpoint's 'sigmas' ({sigmas.shape[0]} levels, {sigmas[0]:.6g} .. "
            f"{sigmas[-1]:.6g}) differ from the config's model.sigma_max={config.model.sigma_max}, "
            f"sigma_min={config.model.sigma_min}, num_scales={config.model.num_scales}."
        )


def ddpm_from_pytorch(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """{'params': ...} for `DDPM(config)` from an official DDPM state_dict (no 'module.' prefix).

    Keys are `all_modules.<i>.<submodule>.<leaf>`; index i follows `ddpm.module_names(config)`.
    The `sigmas` buffer must match the config where the output is divided by it
    (model.scale_by_sigma); otherwise it is unused and ignored.
    """
    names = module_names(config)
    converted: dict[Path, tuple[str, np.ndarray]] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        if key == "sigmas":
            if config.model.scale_by_sigma:
                check_sigmas(np.asarray(value), config)
            continue
        parts = key.split(".")
        if (
            len(parts) < 3
            or parts[0] != "all_modules"
            or not parts[1].isdigit()
            or int(parts[1]) >= len(names)
        ):
            unexpected.append(key)
            continue
        leaf, array = torch_leaf(parts[-1], np.asarray(value))
        converted[(names[int(parts[1])], *parts[2:-1], leaf)] = (key, array)
    expected = param_shapes(get_model(config), config, jnp.float32)
    return {"params": nest_checked(converted, expected, unexpected, "DDPM")}
