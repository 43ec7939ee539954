"""The official CelebA-HQ / FFHQ TFRecord files, read without TensorFlow.

The official score_sde configs point config.data.tfrecords_path at one StyleGAN-style file
(e.g. ffhq-r08.tfrecords for 256 px): each record is a tf.train.Example with 'shape' (int64
[3], C, H, W) and 'data' (the raw uint8 pixels, CHW). A TFRecord file is a sequence of
[length uint64][crc of length uint32][bytes][crc of bytes uint32]; one pass over the headers
finds every record's offset, after which records are read at random with os.pread (safe from
many threads). CRCs are not verified. Images are cropped/resized to image_size if they differ.
"""

from __future__ import annotations

import functools
import os
import struct

import numpy as np

from score_jax.data.preprocess import crop_resize
from score_jax.data.source import DecodedSource, check_split

_HEADER = 12  # uint64 length + uint32 masked crc
_FOOTER = 4


@functools.cache
def record_offsets(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, lengths) int64 [N] of the payload of every record in a TFRecord file."""
    offsets, lengths = [], []
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        position = 0
        while position < size:
            header = file.read(_HEADER)
            if len(header) < _HEADER:
                raise ValueError(f"{path}: truncated TFRecord header at byte {position}.")
            (length,) = struct.unpack("<Q", header[:8])
            offsets.append(position + _HEADER)
            lengths.append(length)
            position += _HEADER + length + _FOOTER
            file.seek(position)
    if position != size:
        raise ValueError(f"{path}: the last TFRecord is truncated (file ends at byte {size}).")
    return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


@functools.cache
def _open(path: str) -> int:
    # One descriptor per file for the whole process; pread needs no shared position.
    return os.open(path, os.O_RDONLY)


def parse_image_example(payload: bytes) -> np.ndarray:
    """A serialized Example with 'shape' [C, H, W] and raw 'data' -> uint8 [H, W, C]."""
    from tensorflow_datasets.proto import tf_example_pb2

    example = tf_example_pb2.Example.FromString(payload)
    features = example.features.feature
    if "shape" not in features or "data" not in features:
        raise ValueError(f"TFRecord example has features {sorted(features)}; expected shape, data.")
    shape = tuple(features["shape"].int64_list.value)
    data = np.frombuffer(features["data"].bytes_list.value[0], np.uint8)
    return data.reshape(shape).transpose(1, 2, 0)


def tfrecord_source(config, split: str) -> DecodedSource:
    """Every image of config.data.tfrecords_path (both splits, as the official code)."""
    check_split(split, ("train", "test"), "TFRecord data")
    path = str(config.data.get("tfrecords_path") or "")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.data.tfrecords_path={path!r} is not a file.")
    offsets, lengths = record_offsets(path)
    size, channels = config.data.image_size, config.data.num_channels
    fd = _open(path)

    def load(i: int) -> tuple[np.ndarray, int]:
        image = parse_image_example(os.pread(fd, int(lengths[i]), int(offsets[i])))
        if image.shape[-1] != channels:
            raise ValueError(
                f"{path}: images have {image.shape[-1]} channels, config.data.num_channels="
                f"{channels}."
            )
        return crop_resize(image, size), 0

    return DecodedSource(len(offsets), load)
