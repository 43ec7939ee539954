"""`score-jax inpaint / colorize / cond-sample`: input checks and the files written."""

import re

import jax
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from score_jax import cli
from score_jax.checkpoints import save_inference_checkpoint
from score_jax.config import load_config
from score_jax.models import init_model

DIGITS = str(REPO / "configs" / "digits" / "vp_ddpmpp.py")
CLASSIFIER = str(REPO / "configs" / "digits" / "classifier.py")
# A small MLP score network and 4 noise levels: the CLI path in a few seconds.
TINY = [
    "--config.model.name=mlp",
    "--config.model.nf=16",
    "--config.model.num_res_blocks=1",
    "--config.model.embedding_type=positional",
    "--config.model.num_scales=4",
    "--config.eval.batch_size=8",
]


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `score-jax argv`."""
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "image_shape, mask_shape, message",
    [
        ((2, 8, 8, 1), (3, 8, 1), r"mask .* has shape \(3, 8, 1\); it must broadcast"),
        ((2, 6, 6, 1), (6, 6), r"must be 8x8 with 1 channel\(s\).*got 6x6 with 1"),
        ((2, 8, 8, 3), (8, 8), r"must be 8x8 with 1 channel\(s\).*got 8x8 with 3"),
    ],
)
def test_inpaint_refuses_bad_images_and_masks(tmp_path, capsys, image_shape, mask_shape, message):
    image = write_npz(tmp_path / "x.npz", images=np.zeros(image_shape, np.uint8))
    mask = write_npz(tmp_path / "m.npz", mask=np.ones(mask_shape, np.uint8))
    argv = ["inpaint", "--config", DIGITS, "--workdir", str(tmp_path), "--image", image]
    status, err = run_cli([*argv, "--mask", mask, "--out", str(tmp_path / "o.png")], capsys)
    assert status == 1
    assert re.search(message, err), err


def test_colorize_refuses_one_channel_models(tmp_path, capsys):
    image = write_npz(tmp_path / "x.npz", images=np.zeros((1, 8, 8, 3), np.uint8))
    argv = ["colorize", "--config", DIGITS, "--workdir", str(tmp_path), "--image", image]
    status, err = run_cli([*argv, "--out", str(tmp_path / "o.png")], capsys)
    assert status == 1 and "needs a 3-channel (RGB) model" in err, err


def test_cond_sample_refuses_unknown_classes(tmp_path, capsys):
    argv = ["cond-sample", "--config", DIGITS, "--workdir", str(tmp_path), "--class", "10"]
    argv += ["--classifier_config", CLASSIFIER, "--classifier_workdir", str(tmp_path)]
    status, err = run_cli([*argv, "--out", str(tmp_path / "o.png")], capsys)
    assert status == 1 and "--class 10 is out of range" in err and "(0..9)" in err, err


def test_inpaint_writes_the_grid_and_keeps_known_pixels(tmp_path, capsys):
    """End to end on an untrained checkpoint: PNG rows of input, mask and 2 samples; the
    known (top) half of every sample equals the input's."""
    config = load_config(DIGITS, TINY)
    params = init_model(jax.random.PRNGKey(0), config)["params"]
    save_inference_checkpoint(tmp_path / "run", 1, params)
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
    npz = write_npz(tmp_path / "x.npz", images=images)
    out = tmp_path / "out" / "grid.png"
    argv = ["inpaint", "--config", DIGITS, *TINY, "--workdir", str(tmp_path / "run")]
    argv += ["--image", npz, "--mask", "top", "--num_samples", "2", "--out", str(out)]
    status, err = run_cli(argv, capsys)
    assert status == 0, err
    samples = np.load(out.with_suffix(".npz"))["samples"]
    assert samples.shape == (6, 8, 8, 1)
    np.testing.assert_allclose(samples[:, :4], np.repeat(images[:, :4] / 255.0, 2, 0), atol=1e-5)
    # 3 rows and 4 columns of 8x8 images with 1-pixel borders, upscaled 8x.
    assert Image.open(out).size == ((4 * 9 + 1) * 8, (3 * 9 + 1) * 8)


def test_colorize_reads_png_and_writes_the_grid(tmp_path, capsys):
    """An untrained 3-channel checkpoint and an RGB PNG: 3 samples of the right shape in [0, 1]
    and a grid of gray input + 3 samples. (The gray constraint itself is tested against the
    closed form in test_controllable.py; an untrained model's colours are clipped here.)"""
    config = load_config(DIGITS, [*TINY, "--config.data.num_channels=3"])
    params = init_model(jax.random.PRNGKey(0), config)["params"]
    save_inference_checkpoint(tmp_path / "run", 1, params)
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out = tmp_path / "color.png"
    argv = ["colorize", "--config", DIGITS, *TINY, "--config.data.num_channels=3"]
    argv += ["--workdir", str(tmp_path / "run"), "--image", str(tmp_path / "x.png")]
    status, err = run_cli([*argv, "--num_samples", "3", "--out", str(out)], capsys)
    assert status == 0, err
    samples = np.load(out.with_suffix(".npz"))["samples"]
    assert samples.shape == (3, 8, 8, 3) and samples.min() >= 0 and samples.max() <= 1
    assert Image.open(out).size == ((4 * 9 + 1) * 8, (1 * 9 + 1) * 8)


def test_cond_sample_runs_and_refuses_a_classifier_of_another_sde(tmp_path, capsys, caplog):
    """An untrained score checkpoint and an all-zero classifier (constant logits: no guidance):
    the grid, the samples and the classifier's verdict are written; a classifier trained for
    another SDE is refused."""
    from score_jax.models.classifier import init_classifier

    config = load_config(DIGITS, TINY)
    save_inference_checkpoint(
        tmp_path / "run", 1, init_model(jax.random.PRNGKey(0), config)["params"]
    )
    shapes = jax.eval_shape(
        lambda: init_classifier(jax.random.PRNGKey(0), load_config(CLASSIFIER, []))
    )
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
    save_inference_checkpoint(tmp_path / "cls", 1, zeros)
    out = tmp_path / "class3.png"
    argv = ["cond-sample", "--config", DIGITS, *TINY, "--workdir", str(tmp_path / "run")]
    argv += ["--classifier_config", CLASSIFIER, "--classifier_workdir", str(tmp_path / "cls")]
    with caplog.at_level("INFO"):
        status, err = run_cli([*argv, "--class", "3", "--num", "5", "--out", str(out)], capsys)
    assert status == 0, err
    assert np.load(out.with_suffix(".npz"))["samples"].shape == (5, 8, 8, 1)
    # Constant logits: argmax is class 0, so none of the samples is counted as a 3.
    assert "assigns 0.0% of the samples to class 3" in caplog.text
    status, err = run_cli(
        [*argv, "--class", "3", "--out", str(out), "--config.model.beta_max=10"], capsys
    )
    assert status == 1 and "The classifier was trained for VPSDE" in err, err
