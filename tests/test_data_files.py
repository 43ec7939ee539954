"""Data sources read from files: npz, image folders, TFRecord, tfds ArrayRecord; official crops."""

import warnings

import numpy as np
import pytest
from conftest import make_data_config as make_config
from PIL import Image

from score_jax import data


def write_npz(path, n, size=4, channels=3, seed=0, **arrays):
    """n distinct random images, labelled by their index, so that labels identify examples."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), np.uint8)
    np.savez(path, images=images, labels=np.arange(n), **arrays)
    return images


def test_official_crops_take_the_documented_windows():
    from score_jax.data import preprocess
    from score_jax.data.tfds import TFDS_DATASETS

    # A CelebA-sized image whose centre 140 x 140 window (rows 39.., cols 19..) is one colour:
    # the CELEBA crop keeps only that window, and resizing a constant window is exact.
    image = np.zeros((218, 178, 3), np.uint8)
    image[39 : 39 + 140, 19 : 19 + 140] = (10, 150, 240)
    out = TFDS_DATASETS["CELEBA"].preprocess(image, 64)
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out.reshape(-1, 3), [[10, 150, 240]] * 64 * 64)
    # resize_small keeps the aspect ratio with the short side at the target (rounded).
    assert preprocess.resize_small(np.zeros((100, 301, 1), np.uint8), 50).shape == (50, 150, 1)
    # LSUN at 128: short side to 128 first, then the centre 128 x 128; other sizes: the largest
    # centred square, then the resize. Both end square.
    lsun = TFDS_DATASETS["LSUN"].preprocess
    assert lsun(np.zeros((300, 400, 3), np.uint8), 128).shape == (128, 128, 3)
    assert lsun(np.zeros((300, 400, 3), np.uint8), 64).shape == (64, 64, 3)
    # The central crop rounds its offsets down, as the official code.
    ramp = np.arange(7)[:, None, None] * np.ones((7, 7, 1), np.uint8)
    np.testing.assert_array_equal(preprocess.central_crop(ramp, 4)[:, 0, 0], [1, 2, 3, 4])


# --- sources from files ---


def test_npz_source_checks_shapes_and_holds_out(tmp_path):
    write_npz(tmp_path / "d.npz", 30)
    config = make_config("npz", image_size=4, channels=3, path=str(tmp_path / "d.npz"), holdout=6)
    train, test = data.get_source(config, "train"), data.get_source(config, "test")
    assert (len(train), len(test)) == (24, 6)
    assert not set(train.labels) & set(test.labels)
    with pytest.raises(ValueError, match="image_size=8"):
        data.get_source(
            make_config("npz", image_size=8, channels=3, path=config.data.path), "train"
        )
    with pytest.raises(FileNotFoundError, match="config.data.path"):
        data.get_source(make_config("npz", path=str(tmp_path / "none.npz")), "train")


def test_folder_crops_resizes_and_skips_corrupt_files(tmp_path):
    # Each image: a centred square of one colour inside borders of another; after the centre
    # crop only the inner colour is left, and resizing a constant image keeps it exactly.
    colours = {"wide.png": (200, 10, 30), "tall.jpg": (20, 220, 90), "square.png": (5, 5, 250)}
    for (name, colour), (h, w) in zip(colours.items(), [(30, 50), (60, 24), (12, 12)], strict=True):
        image = np.zeros((h, w, 3), np.uint8)
        image[:] = 128
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image[top : top + side, left : left + side] = colour
        (tmp_path / "sub").mkdir(exist_ok=True)
        # JPEG without chroma subsampling, so that the border colour does not bleed in.
        Image.fromarray(image).save(
            tmp_path / ("sub" if name == "tall.jpg" else "") / name, quality=95, subsampling=0
        )
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    good = tmp_path / "square.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    config = make_config("folder", image_size=8, channels=3, path=str(tmp_path), random_flip=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert data.num_examples(config, "train") == 3
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.png" in messages and "truncated.png" in messages
    batch = next(iter(data.get_dataset(config, "train", batch_size=3, shuffle=False, seed=0)))
    assert batch["image"].shape == (3, 8, 8, 3) and batch["image"].dtype == np.uint8
    # Sorted paths: square.png, sub/tall.jpg, wide.png. JPEG is lossy: allow a few levels.
    for image, name in zip(batch["image"], ["square.png", "tall.jpg", "wide.png"], strict=True):
        tol = 6 if name.endswith("jpg") else 0
        np.testing.assert_allclose(image.reshape(-1, 3), [colours[name]] * 64, atol=tol)


def write_tfrecords(path, images_chw):
    """The official StyleGAN-style file: Examples with 'shape' and raw 'data' (CRCs zeroed)."""
    import struct

    from tensorflow_datasets.proto import tf_example_pb2

    with open(path, "wb") as file:
        for image in images_chw:
            example = tf_example_pb2.Example()
            feature = example.features.feature
            feature["shape"].int64_list.value.extend(image.shape)
            feature["data"].bytes_list.value.append(image.tobytes())
            payload = example.SerializeToString()
            file.write(struct.pack("<QI", len(payload), 0) + payload + struct.pack("<I", 0))


def test_ffhq_tfrecords_are_read_without_tensorflow(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), np.uint8)
    write_tfrecords(tmp_path / "ffhq-r03.tfrecords", images)
    config = make_config("FFHQ", image_size=8, channels=3)
    with pytest.raises(FileNotFoundError, match="config.data.path"):
        data.get_source(config, "train")
    config.data.tfrecords_path = str(tmp_path / "ffhq-r03.tfrecords")
    assert data.num_examples(config, "test") == 5
    ds = data.get_dataset(config, "train", batch_size=5, shuffle=False, seed=0, num_epochs=1)
    (batch,) = list(ds)
    np.testing.assert_array_equal(batch["image"], images.transpose(0, 2, 3, 1))


# --- tfds without TensorFlow ---


@pytest.fixture(scope="module")
def fake_cifar10(tmp_path_factory):
    """A tiny 'cifar10' prepared as ArrayRecord by tfds itself, with the real builder's features.

    tfds encodes images given as PIL images without TensorFlow, so the real Cifar10 builder
    with its generator replaced writes exactly the files `tfds build --file_format=array_record`
    would, which the reader then opens through the registered 'cifar10' name.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.image_classification import cifar

    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (20, 32, 32, 3), np.uint8)}
    images["test"] = rng.integers(0, 256, (7, 32, 32, 3), np.uint8)

    with tfds.core.registered.skip_registration():

        class TinyCifar10(cifar.Cifar10):
            name = "cifar10"

            def _split_generators(self, dl_manager):
                return {split: self._generate_examples(split) for split in images}

            def _generate_examples(self, split):
                for i, image in enumerate(images[split]):
                    yield i, {"id": f"{split}{i}", "image": Image.fromarray(image), "label": i % 10}

    TinyCifar10(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir, images


def test_tfds_cifar10_reads_prepared_array_record(fake_cifar10):
    data_dir, images = fake_cifar10
    config = make_config("CIFAR10", image_size=32, channels=3, data_dir=str(data_dir))
    assert data.num_examples(config, "train") == 20 and data.num_examples(config, "test") == 7
    ds = data.get_dataset(config, "test", batch_size=7, shuffle=False, seed=0, num_epochs=1)
    (batch,) = list(ds)
    assert batch["image"].shape == (7, 32, 32, 3) and batch["label"].dtype == np.int32
    # tfds stores examples in its own order; every generated image comes back exactly once
    # (PNG is lossless), with its label.
    index = {image.tobytes(): i for i, image in enumerate(images["test"])}
    found = [index[image.tobytes()] for image in batch["image"]]
    assert sorted(found) == list(range(7))
    np.testing.assert_array_equal(batch["label"], np.asarray(found) % 10)
    small = make_config("CIFAR10", image_size=16, channels=3, data_dir=str(data_dir))
    batch = next(iter(data.get_dataset(small, "train", batch_size=4, shuffle=True, seed=0)))
    assert batch["image"].shape == (4, 16, 16, 3)


def test_decoded_splits_are_cached_after_their_first_pass(fake_cifar10):
    from score_jax.data.source import CachedSource, DecodedSource

    loads = []
    base = DecodedSource(10, lambda i: (loads.append(i) or np.full((2, 2, 1), i, np.uint8), i))
    cached = CachedSource(base)
    first = cached.read(np.array([3, 1, 3, 7]))
    second = cached.read(np.array([7, 3, 0]))
    np.testing.assert_array_equal(first["image"][:, 0, 0, 0], [3, 1, 3, 7])
    np.testing.assert_array_equal(second["label"], [7, 3, 0])
    assert sorted(loads) == [0, 1, 3, 7]  # each example decoded once
    # Through get_dataset: the same cached source serves every dataset over the same split.
    data_dir, images = fake_cifar10
    config = make_config("CIFAR10", image_size=32, channels=3, data_dir=str(data_dir), cache_mb=1)
    source = data.get_source(config, "test")
    assert isinstance(source, CachedSource) and data.get_source(config, "test") is source
    ds = data.get_dataset(config, "test", batch_size=7, shuffle=True, seed=0, num_epochs=2)
    rows = {image.tobytes() for image in images["test"]}
    for batch in ds:  # both epochs, the second from memory: flipped or not, the same images
        unflipped = [b if b.tobytes() in rows else b[:, ::-1] for b in batch["image"]]
        assert {b.tobytes() for b in unflipped} == rows


def test_tfds_missing_dataset_says_how_to_prepare_it(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    config = make_config("CIFAR10", image_size=32, channels=3, data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        data.get_dataset(config, "train", batch_size=8, shuffle=True, seed=0)
    message = str(error.value)
    assert "tfds build cifar10 --file_format=array_record" in message
    assert "config.data.data_dir" in message and str(tmp_path) in message
    with pytest.raises(ValueError, match="config.data.category"):
        data.get_source(make_config("LSUN", image_size=32, channels=3), "train")
    with pytest.raises(ValueError, match="Unknown config.data.dataset"):
        data.get_source(make_config("MNIST"), "train")
