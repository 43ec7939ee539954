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


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """torch key -> float32 array, from pytorch-fid's .pth or from our .npz."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            f"Reading {path} needs torch (pip install 'score-jax[torch]'); or convert it once "
            "with scripts/make_inception_weights.py --from-pth to an .npz."
        ) from err
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.numpy() for key, value in state_dict.items()}


def load_inception_variables(config=None, *, download: bool = True) -> dict[str, Any]:
    """FIDInception variables from the located weight file."""
    from score_jax.evaluation.inception import from_pytorch

    path = locate_weights(config, download=download)
    try:
        return from_pytorch(load_state_dict(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
