"""Random-access example sources: what every dataset is turned into before batching.

A source has a length and `read(indices) -> {"image": [n, ...], "label": int32 [n]}`. Datasets
that fit in memory are `ArraySource`s (reading is one fancy index); datasets of encoded files
are `DecodedSource`s whose examples are decoded on a thread pool (PIL and the ArrayRecord
reader release the GIL while they work).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

Example = tuple[np.ndarray, int]


class Source(Protocol):
    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Examples held in memory: images [N, ...] (uint8 or float32), labels int32 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"ArraySource: {len(self.images)} images but {len(self.labels)} labels."
            )

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": self.images[indices], "label": self.labels[indices]}

    def subset(self, indices: np.ndarray) -> ArraySource:
        return ArraySource(self.images[indices], self.labels[indices])


# Decoding threads per process; SCORE_JAX_DECODE_THREADS overrides.
DECODE_THREADS = int(os.environ.get("SCORE_JAX_DECODE_THREADS", min(16, os.cpu_count() or 1)))
_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def decode_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One process-wide pool of decoding threads (shared by all datasets)."""
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
    return _POOL


@dataclasses.dataclass(frozen=True)
class DecodedSource:
    """`size` examples produced one at a time by `load(i) -> (image [H, W, C] uint8, label)`."""

    size: int
    load: Callable[[int], Example]

    def __len__(self) -> int:
        return self.size

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        # Chunks of several examples per task keep the pool's overhead small for tiny images.
        indices = [int(i) for i in indices]
        chunk = max(1, len(indices) // (4 * DECODE_THREADS))
        parts = [indices[i : i + chunk] for i in range(0, len(indices), chunk)]
        loaded = [ex for part in decode_pool().map(self._load_many, parts) for ex in part]
        return {
            "image": np.stack([image for image, _ in loaded]),
            "label": np.asarray([label for _, label in loaded], np.int32),
        }

    def _load_many(self, indices: list[int]) -> list[Example]:
        return [self.load(i) for i in indices]


class CachedSource:
    """A decoded source that keeps every example it has decoded, so only epoch 1 decodes.

    The host's first pass costs what the base source costs; after it, a batch is one fancy
    index into uint8 [N, H, W, C] memory (allocated on the first read, filled as examples are
    first seen). Rows are only ever written with their one decoded value, so concurrent
    readers at worst decode a row twice.
    """

    def __init__(self, base: Source):
        self.base = base
        self._filled = np.zeros(len(base), bool)
        self._images: np.ndarray | None = None
        self._labels = np.zeros(len(base), np.int32)

    def __len__(self) -> int:
        return len(self.base)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices)
        missing = np.unique(indices[~self._filled[indices]])
        if len(missing):
            fresh = self.base.read(missing)
            if self._images is None:
                shape = (len(self), *fresh["image"].shape[1:])
                self._images = np.empty(shape, fresh["image"].dtype)
            self._images[missing] = fresh["image"]
            self._labels[missing] = fresh["label"]
            self._filled[missing] = True
        return {"image": self._images[indices], "label": self._labels[indices]}


@dataclasses.dataclass(frozen=True)
class SubsetSource:
    """The examples `indices` [n] of another source, renumbered 0..n-1."""

    base: Source
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return self.base.read(self.indices[indices])


def holdout_split(source: Source, split: str, holdout: int, what: str) -> Source:
    """'train'/'test' of a source without its own test split.

    The last `holdout` examples of a fixed permutation (seed 0) are the test split, the rest
    the training split; with holdout 0 both splits are all the data (the official FFHQ and
    CelebA-HQ setup evaluates on the training set).
    """
    check_split(split, ("train", "test"), what)
    n = len(source)
    if holdout == 0:
        return source
    if not 0 < holdout < n:
        raise ValueError(
            f"config.data.holdout={holdout} must be between 0 and the number of examples "
            f"({n}) of {what}."
        )
    order = np.random.default_rng(0).permutation(n)
    chosen = np.sort(order[n - holdout :] if split == "test" else order[: n - holdout])
    if isinstance(source, ArraySource):
        return source.subset(chosen)
    return SubsetSource(source, chosen)


def check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    if split not in allowed:
        raise ValueError(f"Unknown split {split!r} for {what}; expected one of {allowed}.")
