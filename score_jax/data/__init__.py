"""Datasets as host-local numpy batches, and the conversions that turn them into model inputs.

    ds = get_dataset(config, "train", batch_size=128, shuffle=True, seed=0)
    for batch in ds:   # {"image": uint8 [B_local, H, W, C], "label": int32 [B_local]}
        x = get_scaler(config)(to_float(batch["image"], key, dequantize=True))

config.data.dataset picks the source (see `SOURCES`; each source module's docstring says how
its data must be laid out). Batches are this host's share of a global batch that does not
depend on the number of hosts (see pipeline.py); `prefetch_to_mesh` turns them into global
jax.Arrays sharded over the mesh axis "data".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax

from score_jax.data.arrays import npz_source
from score_jax.data.digits import NUM_LEVELS, digits_source
from score_jax.data.folder import folder_source
from score_jax.data.mixture import mixture_source
from score_jax.data.pipeline import BatchPlan, Dataset, host_batches, stack_batches
from score_jax.data.preprocess import get_inverse_scaler, get_scaler, to_float
from score_jax.data.source import CachedSource, DecodedSource, Source, SubsetSource
from score_jax.data.tfds import tfds_num_examples, tfds_source
from score_jax.data.tfrecord import tfrecord_source
from score_jax.parallel import prefetch_to_mesh as _prefetch

__all__ = [
    "SOURCES",
    "BatchPlan",
    "Dataset",
    "get_dataset",
    "get_inverse_scaler",
    "get_scaler",
    "get_source",
    "host_batches",
    "num_examples",
    "prefetch_to_mesh",
    "quantization_levels",
    "stack_batches",
    "to_float",
]


def _digits(config, split):
    return digits_source(config, split)


def _mixture(config, split):
    return mixture_source(config, split)


def _npz(config, split):
    return npz_source(config, split)


def _folder(config, split):
    return folder_source(config, split)


def _tfds(config, split):
    return tfds_source(config, split)


def _folder_or_tfds(config, split):
    # CelebA-HQ and FFHQ: an image folder (config.data.path), else the official TFRecord file
    # (config.data.tfrecords_path), else tfds celeb_a_hq/<image_size> (CelebA-HQ only).
    if config.data.get("path"):
        return _folder(config, split)
    if config.data.get("tfrecords_path"):
        return tfrecord_source(config, split)
    if config.data.dataset == "FFHQ":
        raise FileNotFoundError(
            "FFHQ needs config.data.path (a folder of PNG/JPEG images, any resolution; they are "
            "center-cropped and resized to image_size) or config.data.tfrecords_path (the "
            "official StyleGAN-style .tfrecords file)."
        )
    return _tfds(config, split)


# config.data.dataset -> function (config, split) -> Source. Imports are deferred so that the
# built-in datasets never import tensorflow_datasets.
SOURCES: dict[str, Callable[[Any, str], Source]] = {
    "DIGITS": _digits,
    "MIXTURE": _mixture,
    "npz": _npz,
    "folder": _folder,
    "CIFAR10": _tfds,
    "SVHN": _tfds,
    "CELEBA": _tfds,
    "LSUN": _tfds,
    "CelebAHQ": _folder_or_tfds,
    "FFHQ": _folder_or_tfds,
}


# Decoded-and-cached sources, shared by every dataset over the same data in this process (the
# training loop re-creates its evaluation dataset again and again).
_CACHED: dict[tuple, CachedSource] = {}


def get_source(config, split: str) -> Source:
    """The random-access source of `split` ('train' or 'test') of config.data.dataset.

    Sources that decode files (tfds, folders, TFRecord) are kept decoded in memory after their
    first pass when the split's uint8 size is at most config.data.cache_mb megabytes.
    """
    name = config.data.dataset
    if name not in SOURCES:
        raise ValueError(
            f"Unknown config.data.dataset={name!r}; expected one of {sorted(SOURCES)}."
        )
    where = ("dataset", "image_size", "num_channels", "data_dir", "category", "path")
    key = (split, *(str(config.data.get(k)) for k in (*where, "tfrecords_path", "holdout")))
    if key in _CACHED:
        return _CACHED[key]
    source = SOURCES[name](config, split)
    if isinstance(source, DecodedSource | SubsetSource):
        size_mb = len(source) * config.data.image_size**2 * config.data.num_channels / 2**20
        if size_mb <= config.data.get("cache_mb", 0):
            source = _CACHED[key] = CachedSource(source)
    return source


def num_examples(config, split: str) -> int:
    """Number of examples in `split` of config.data.dataset."""
    if config.data.dataset in ("CIFAR10", "SVHN", "CELEBA", "LSUN") or (
        config.data.dataset == "CelebAHQ"
        and not config.data.get("path")
        and not config.data.get("tfrecords_path")
    ):
        return tfds_num_examples(config, split)  # from the metadata, without opening the data
    return len(get_source(config, split))


def quantization_levels(config) -> int | None:
    """The number of levels a pixel of config.data.dataset takes (None: continuous data).

    Stored uint8 value x is level k = round(x * (levels - 1) / 255). Dequantization maps k to
    (k + u) / levels and bits/dim are counted on that grid (`score_jax.likelihood.bpd_offset`),
    so a model is scored against the data's own quantization: 256 for 8-bit image datasets,
    17 for the built-in digits at their native 8x8 size (pixel values 0..16).
    """
    name = config.data.dataset
    if name == "MIXTURE":
        return None
    if name == "DIGITS" and config.data.image_size == 8:
        return NUM_LEVELS
    return 256


def get_dataset(
    config,
    split: str,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    prefetch: int = 16,
) -> Dataset:
    """This host's batches of `split`: {"image": [B_local, ...], "label": int32 [B_local]}.

    batch_size is the GLOBAL batch; B_local = batch_size // process_count. Images are uint8
    NHWC (float32 [B_local, D] for MIXTURE), flipped at random when shuffle and
    config.data.random_flip. num_epochs=None repeats forever; start_step skips to global batch
    number start_step (resume). With drop_remainder=False each batch also has "mask" bool
    [B_local] (False on the zero rows that pad the last batch). process_index/process_count
    default to jax's; prefetch is the number of batches prepared ahead on a background thread
    (keep it above training.n_jitted_steps: a training call takes that many batches at once).
    """
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    source = get_source(config, split)
    plan = BatchPlan(
        num_examples=len(source),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        process_index=process_index,
        process_count=process_count,
    )
    is_image = config.data.dataset != "MIXTURE"
    random_flip = bool(shuffle and config.data.random_flip and is_image)
    return Dataset(source, plan, random_flip, num_epochs, start_step, prefetch)


def prefetch_to_mesh(batches: Iterable, mesh, size: int = 2, batch_axis: int = 0) -> Iterator:
    """Global jax.Arrays sharded over mesh axis "data", `size` batches transferred ahead.

    Each host passes its own B_local rows; see score_jax.parallel.prefetch_to_mesh.
    """
    return _prefetch(batches, mesh, size=size, batch_axis=batch_axis)
