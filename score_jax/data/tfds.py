"""TensorFlow Datasets read WITHOUT TensorFlow: prepared ArrayRecord data via `as_data_source`.

`tfds.builder(name, data_dir=config.data.data_dir).as_data_source(split)` gives random access
to examples stored as ArrayRecord; tfds decodes the PNG/JPEG bytes with PIL. Preparing a
dataset (downloading and writing the files) needs TensorFlow once, on any machine:

    pip install tensorflow tensorflow-datasets
    tfds build cifar10 --file_format=array_record --data_dir=DIR

then set config.data.data_dir=DIR (omit it for the tfds default ~/tensorflow_datasets).
Data already prepared as TFRecord converts with `tfds convert_format`.

Per dataset, the official score_sde splits and preprocessing (see `TFDS_DATASETS`); results
are uint8, so CelebA and LSUN-128 pixels are rounded where the official kept floats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from score_jax.data.preprocess import central_crop, crop_resize, resize, resize_small
from score_jax.data.source import DecodedSource

Preprocess = Callable[[np.ndarray, int], np.ndarray]


def _resize_to(image: np.ndarray, size: int) -> np.ndarray:
    return resize(image, size)


def _celeba_crop(image: np.ndarray, size: int) -> np.ndarray:
    return resize_small(central_crop(image, 140), size)


def _lsun_crop(image: np.ndarray, size: int) -> np.ndarray:
    # The official code treats 128 px LSUN differently from every other size.
    if size == 128:
        return central_crop(resize_small(image, size), size)
    return crop_resize(image, size)


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A tfds dataset name ({category} filled from config.data.category), its splits and crop."""

    name: str
    train_split: str
    test_split: str
    preprocess: Preprocess


TFDS_DATASETS: dict[str, TfdsDataset] = {
    "CIFAR10": TfdsDataset("cifar10", "train", "test", _resize_to),
    "SVHN": TfdsDataset("svhn_cropped", "train", "test", _resize_to),
    "CELEBA": TfdsDataset("celeb_a", "train", "validation", _celeba_crop),
    "LSUN": TfdsDataset("lsun/{category}", "train", "validation", _lsun_crop),
    # tfds celeb_a_hq has only a train split; the official code also evaluated on it.
    "CelebAHQ": TfdsDataset("celeb_a_hq/{image_size}", "train", "train", _resize_to),
}


def tfds_name(config) -> str:
    """The tfds dataset name for config.data.dataset (with its category or resolution)."""
    spec = TFDS_DATASETS[config.data.dataset]
    if "{category}" in spec.name and not config.data.get("category"):
        raise ValueError(
            f"config.data.dataset={config.data.dataset!r} needs config.data.category "
            f"(e.g. 'bedroom', 'church_outdoor')."
        )
    return spec.name.format(category=config.data.get("category"), image_size=config.data.image_size)


def tfds_split(config, split: str) -> str:
    """'train' and 'test' map to the official training and evaluation splits."""
    spec = TFDS_DATASETS[config.data.dataset]
    return {"train": spec.train_split, "test": spec.test_split}.get(split, split)


def _prepared_builder(config):
    import tensorflow_datasets as tfds

    name, data_dir = tfds_name(config), config.data.get("data_dir")
    where = data_dir or "the tfds default ~/tensorflow_datasets"
    how = (
        f"Prepare it once (needs TensorFlow, on any machine): `pip install tensorflow "
        f"tensorflow-datasets && tfds build {name} --file_format=array_record "
        f"--data_dir=DIR`, then set --config.data.data_dir=DIR."
    )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 -- tfds raises many types for unknown names
        raise FileNotFoundError(f"tfds dataset {name!r} unavailable: {error}. {how}") from error
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tfds dataset {name!r} (version {builder.version}) is not prepared in {where}. {how}"
        )
    file_format = str(builder.info.file_format.value if builder.info.file_format else "")
    if file_format != "array_record":
        raise FileNotFoundError(
            f"tfds dataset {name!r} in {where} is stored as {file_format or 'tfrecord'}, which "
            f"cannot be read without TensorFlow. Rebuild it with --file_format=array_record "
            f"or convert it with `tfds convert_format`. {how}"
        )
    return builder


def _check_split(builder, name: str, split: str) -> None:
    if split not in builder.info.splits:
        raise ValueError(
            f"tfds dataset {name!r} has splits {sorted(builder.info.splits.keys())}, not {split!r}."
        )


def tfds_num_examples(config, split: str) -> int:
    builder = _prepared_builder(config)
    name, split = tfds_name(config), tfds_split(config, split)
    _check_split(builder, name, split)
    return builder.info.splits[split].num_examples


def tfds_source(config, split: str) -> DecodedSource:
    """Random access to the split, each example preprocessed to uint8 [S, S, C]."""
    builder = _prepared_builder(config)
    name, split = tfds_name(config), tfds_split(config, split)
    _check_split(builder, name, split)
    records = builder.as_data_source(split=split)
    preprocess = TFDS_DATASETS[config.data.dataset].preprocess
    size, channels = config.data.image_size, config.data.num_channels

    def load(i: int) -> tuple[np.ndarray, int]:
        example = records[i]
        image = np.asarray(example["image"], np.uint8)
        if image.shape[-1] != channels:
            raise ValueError(
                f"tfds {name!r} images have {image.shape[-1]} channels, but "
                f"config.data.num_channels={channels}."
            )
        return preprocess(image, size), int(example.get("label", 0))

    return DecodedSource(len(records), load)
