"""Write an Inception weight file for score-jax's FID code.

Two modes:
  --from-pth FILE.pth  convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth to .npz, so the
                       evaluation can run without torch installed;
  --recipe FILE.json   the synthetic weights of the reference fixture (fid_inception.json): every
                       tensor drawn from numpy's default_rng(1000 + index) as the json describes.
                       Useful for end-to-end tests; it is NOT the real network.

The .npz holds the pytorch-fid state_dict tensors under their torch keys (OIHW convs); one made
--from-pth also records the .pth's sha256 and a digest of the tensors, which score-jax checks
when it loads the file (a recipe .npz has neither and counts as unverified weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from score_jax.evaluation.weights import (
    NPZ_PTH_SHA256,
    NPZ_TENSORS_SHA256,
    WEIGHTS_SHA256_PREFIX,
    file_sha256,
    load_state_dict,
    tensors_sha256,
)


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
        if tensors_sha256(state_dict) != expected:
            raise SystemExit("Regenerated weights do not match the recipe's sha256.")
        provenance = {}
    else:
        pth_sha256 = file_sha256(args.from_pth)
        if not pth_sha256.startswith(WEIGHTS_SHA256_PREFIX):
            raise SystemExit(
                f"{args.from_pth}: sha256 {pth_sha256[:16]}... is not pytorch-fid's "
                f"pt_inception-2015-12-05 (expected {WEIGHTS_SHA256_PREFIX}...)."
            )
        state_dict = load_state_dict(args.from_pth)
        # Recorded so that loading the .npz can check it came from the verified .pth.
        provenance = {NPZ_PTH_SHA256: pth_sha256, NPZ_TENSORS_SHA256: tensors_sha256(state_dict)}
    np.savez(args.out, **state_dict, **provenance)
    print(f"wrote {len(state_dict)} tensors to {args.out}")


if __name__ == "__main__":
    main()
