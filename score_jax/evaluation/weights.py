"""Finding and reading the FID Inception weights (pytorch-fid's pt_inception-2015-12-05).

Where the file is looked for, in order:
  1. `config.eval.inception_weights`, or the environment variable SCORE_JAX_INCEPTION_WEIGHTS;
     a path given there must exist (no silent fallback to another file);
  2. the cache directory ($SCORE_JAX_CACHE, else $XDG_CACHE_HOME/score_jax, else
     ~/.cache/score_jax), as the .pth or as our converted .npz;
  3. a download of the .pth from pytorch-fid's release into the cache, if the network allows;
  4. otherwise a FileNotFoundError saying where to get the file and where to put it.
`.pth` files need torch (the `[torch]` extra); `.npz` files (scripts/make_inception_weights.py
--from-pth) need nothing.

The weights are identified before use: a .pth by its sha256 (torch.hub's convention: the file
name carries its first hex digits), an .npz by the provenance the converter records (the source
.pth's sha256 and a digest of the tensors, checked again on load). FID / IS / KID from other
weights are not comparable with published numbers, so other files are refused, unless
config.eval.allow_unverified_inception is set (tests with synthetic weights): then every load
warns and every report says `inception_weights_verified: false`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from score_jax.evaluation.inception import from_pytorch

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
)
# torch.hub convention: the file name carries the first hex digits of the file's sha256.
WEIGHTS_SHA256_PREFIX = "6726825d"
ENV_WEIGHTS = "SCORE_JAX_INCEPTION_WEIGHTS"
ENV_CACHE = "SCORE_JAX_CACHE"
DOWNLOAD_TIMEOUT_S = 10.0


def cache_dir() -> Path:
    """Directory for downloaded weights and other cached files."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "score_jax"


def _configured_path(config) -> str:
    configured = ""
    if config is not None:
        configured = config.get("eval", {}).get("inception_weights", "") or ""
    return configured or os.environ.get(ENV_WEIGHTS, "")


def _download(destination: Path, timeout: float) -> bool:
    """Fetches WEIGHTS_URL to `destination` atomically; False if the network is unavailable."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    logging.info("Downloading FID Inception weights from %s", WEIGHTS_URL)
    try:
        with urllib.request.urlopen(WEIGHTS_URL, timeout=timeout) as response:
            fd, tmp = tempfile.mkstemp(dir=destination.parent, suffix=".part")
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except OSError as err:  # URLError, timeouts and DNS failures are all OSErrors
        logging.warning("Could not download the Inception weights: %s", err)
        return False
    if not digest.hexdigest().startswith(WEIGHTS_SHA256_PREFIX):
        os.remove(tmp)
        raise ValueError(
            f"Downloaded {WEIGHTS_URL} but its sha256 {digest.hexdigest()[:16]}... does not "
            f"start with {WEIGHTS_SHA256_PREFIX}; refusing to use it."
        )
    os.replace(tmp, destination)
    return True


def locate_weights(
    config=None, *, download: bool = True, timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """The path of the Inception weight file, following the search order of this module."""
    configured = _configured_path(config)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights not found at {path} (from config.eval.inception_weights or "
                f"${ENV_WEIGHTS}). {_where_to_get_it()}"
            )
        return path
    cached = cache_dir() / WEIGHTS_FILENAME
    for candidate in (cached, cached.with_suffix(".npz")):
        if candidate.is_file():
            return candidate
    if download and _download(cached, timeout):
        return cached
    raise FileNotFoundError(f"FID Inception weights not found. {_where_to_get_it()}")


def _where_to_get_it() -> str:
    return (
        f"Download {WEIGHTS_URL} and put it at {cache_dir() / WEIGHTS_FILENAME}, or point "
        f"config.eval.inception_weights (or ${ENV_WEIGHTS}) at it. A .npz made by "
        "scripts/make_inception_weights.py --from-pth works too and needs no torch."
    )


# Provenance entries of a converted .npz (not tensors).
NPZ_PTH_SHA256 = "__pth_sha256__"
NPZ_TENSORS_SHA256 = "__tensors_sha256__"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state_dict: dict[str, np.ndarray]) -> str:
    """sha256 of all tensors' little-endian float32 bytes, concatenated in order."""
    digest = hashlib.sha256()
    for value in state_dict.values():
        digest.update(np.ascontiguousarray(value, dtype="<f4").tobytes())
    return digest.hexdigest()


def npz_provenance(path: str | Path) -> dict[str, str]:
    """The converter's provenance entries of an .npz ({} when it has none)."""
    with np.load(path) as data:
        return {k: str(data[k]) for k in (NPZ_PTH_SHA256, NPZ_TENSORS_SHA256) if k in data.files}


def weights_verified(path: str | Path, state_dict: dict[str, np.ndarray]) -> bool:
    """Whether `path` (with its loaded tensors) is pytorch-fid's pt_inception-2015-12-05."""
    path = Path(path)
    if path.suffix != ".npz":
        return file_sha256(path).startswith(WEIGHTS_SHA256_PREFIX)
    provenance = npz_provenance(path)
    return provenance.get(NPZ_PTH_SHA256, "").startswith(WEIGHTS_SHA256_PREFIX) and provenance.get(
        NPZ_TENSORS_SHA256
    ) == tensors_sha256(state_dict)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """torch key -> float32 array, from pytorch-fid's .pth or from our .npz."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {key: data[key] for key in data.files if not key.startswith("__")}
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            f"Reading {path} needs torch (pip install 'score-jax[torch]'); or convert it once "
            "with scripts/make_inception_weights.py --from-pth to an .npz."
        ) from err
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.numpy() for key, value in state_dict.items()}


def load_inception(
    config=None, *, download: bool = True, allow_unverified: bool | None = None
) -> tuple[dict[str, Any], bool]:
    """(FIDInception variables, whether the weights are verified) from the located file.

    Unverified weights are refused unless allow_unverified (default:
    config.eval.allow_unverified_inception, else False)."""
    path = locate_weights(config, download=download)
    state_dict = load_state_dict(path)
    verified = weights_verified(path, state_dict)
    if allow_unverified is None:
        allow_unverified = bool(config and config.eval.get("allow_unverified_inception", False))
    if not verified:
        if not allow_unverified:
            raise ValueError(
                f"{path} is not pytorch-fid's {WEIGHTS_FILENAME} (its sha256 does not start "
                f"with {WEIGHTS_SHA256_PREFIX}, or the .npz lacks the converter's matching "
                "provenance): FID / IS / KID from it would not be comparable with published "
                "numbers. " + _where_to_get_it() + " For tests with other weights, set "
                "--config.eval.allow_unverified_inception=True; every result then says so."
            )
        log.warning("UNVERIFIED Inception weights %s: FID / IS / KID are not comparable.", path)
    try:
        return from_pytorch(state_dict), verified
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def load_inception_variables(
    config=None, *, download: bool = True, allow_unverified: bool | None = None
) -> dict[str, Any]:
    """FIDInception variables from the located weight file (see `load_inception`)."""
    return load_inception(config, download=download, allow_unverified=allow_unverified)[0]
