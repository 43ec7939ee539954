"""Official NCSNv2 weights (score_sde_pytorch or the original ncsnv2 code) -> our Flax variables.

Both codebases name the modules alike (`res2.0.conv2.conv.weight`,
`refine1.adapt_convs.0.1_1_conv.weight`, `normalizer.alpha`, ...); our names join a ModuleList
index to the list's name with '_' (`res2_0/conv2/conv/kernel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from score_jax.models import get_model
from score_jax.models.convert_ddpm import (
    Path,
    check_sigmas,
    nest_checked,
    param_shapes,
    torch_leaf,
)
from score_jax.models.ncsnv2 import NCSNv2_64, NCSNv2_128, NCSNv2_256

NCSNV2_MODELS = {"ncsnv2_64": NCSNv2_64, "ncsnv2_128": NCSNv2_128, "ncsnv2_256": NCSNv2_256}


def flax_path(torch_key: str) -> Path:
    """'refine1.adapt_convs.0.1_1_conv' -> ('refine1', 'adapt_convs_0', '1_1_conv')."""
    path: list[str] = []
    for part in torch_key.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


def ncsnv2_from_pytorch(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """{'params': ...} for the NCSNv2 network named by config.model.name (no 'module.' prefix)."""
    name = config.model.name
    if name not in NCSNV2_MODELS:
        raise ValueError(
            f"config.model.name must be one of {sorted(NCSNV2_MODELS)} here, found {name!r}."
        )
    converted: dict[Path, tuple[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        if key == "sigmas":
            check_sigmas(np.asarray(value), config)
            continue
        *modules, leaf = flax_path(key)
        new_leaf, array = torch_leaf(leaf, np.asarray(value))
        converted[(*modules, new_leaf)] = (key, array)
    expected = param_shapes(get_model(config), config, jnp.int32)
    return {"params": nest_checked(converted, expected, [], name)}
