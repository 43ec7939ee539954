"""Write an Inception weight file for score-jax's FID code.

Two modes:
  --from-pth FILE.pth  convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth to .npz, so the
                       evaluation can run without torch installed;
  --recipe FILE.json   the synthetic weights of the reference fixture (fid_inception.json): every
                       tensor drawn from numpy's default_rng(1000 + index) as the json describes.
                       Useful for end-to-end tests; it is NOT the real network.

The .npz holds the pytorch-fid state_dict tensors under their torch keys (OIHW convs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np


def _recipe_tensor(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    g = np.random.default_rng(seed).standard_normal(shape)
    if key.endswith("conv.weight"):
        return g * np.sqrt(2.0 / np.prod(shape[1:]))
    if key == "fc.weight":
        return g * np.sqrt(1.0 / shape[1])
    if key == "fc.bias":
        return 0.01 * g
    if key.endswith("bn.weight"):
        return 1.0 + 0.1 * g
    if key.endswith(("bn.bias", "bn.running_mean")):
        return 0.1 * g
    if key.endswith("bn.running_var"):
        return 1.0 + 0.1 * np.abs(g)
    raise ValueError(f"No recipe rule for key {key!r}.")


def recipe_state_dict(spec: dict) -> dict[str, np.ndarray]:
    """float32 state_dict (torch keys, state_dict order) from fid_inception.json's recipe."""
    state_dict = {}
    for entry in spec["state_dict_keys"]:
        if entry["key"].endswith("num_batches_tracked"):
            continue  # counted in the index, never drawn
        tensor = _recipe_tensor(entry["key"], tuple(entry["shape"]), entry["seed"])
        state_dict[entry["key"]] = tensor.astype(np.float32)
    return state_dict


def state_dict_sha256(state_dict: dict[str, np.ndarray]) -> str:
    """sha256 of all tensors' little-endian float32 bytes, concatenated in order."""
    digest = hashlib.sha256()
    for value in state_dict.values():
        digest.update(np.ascontiguousarray(value, dtype="<f4").tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-pth", help="pytorch-fid .pth weight file (needs torch)")
    source.add_argument("--recipe", help="fid_inception.json of the reference fixtures")
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args()
    if args.recipe:
        spec = json.loads(Path(args.recipe).read_text())
        state_dict = recipe_state_dict(spec)
        expected = spec["weight_recipe"]["sha256_of_concatenated_float32_tensors"]
        if state_dict_sha256(state_dict) != expected:
            raise SystemExit("Regenerated weights do not match the recipe's sha256.")
    else:
        from score_jax.evaluation.weights import load_state_dict

        state_dict = load_state_dict(args.from_pth)
    np.savez(args.out, **state_dict)
    print(f"wrote {len(state_dict)} tensors to {args.out}")


if __name__ == "__main__":
    main()
