"""`score-jax inpaint`, `colorize` and `cond-sample`: controllable generation from files.

Images are PNG files (one image) or .npz files (the array 'images', 'image' or 'samples', or the
only array: [N, H, W, C], [H, W, C] or [H, W]); uint8 values are read as /255, floats must lie
in [0, 1]. Masks are the same kinds of file (nonzero = known pixel), of shape [H, W], [H, W, 1],
[H, W, C] or one per image, or a built-in name: 'top' / 'bottom' / 'left' / 'right' (that half
known). Each run writes a PNG grid, one row per input: input (unknown pixels black), mask,
then the samples; the samples in [0, 1] go to an .npz beside it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from score_jax import controllable
from score_jax.checkpoints import restore_for_inference
from score_jax.config import load_config
from score_jax.data import get_inverse_scaler, get_scaler
from score_jax.evaluation.stats import save_npz_atomic
from score_jax.images import image_grid
from score_jax.models.classifier import get_classifier, get_logits_fn
from score_jax.sampling import default_eps, pc_sample
from score_jax.score_model import build_score_model
from score_jax.sde import get_sde
from score_jax.train.classifier import restore_classifier, train_classifier

HALVES = ("top", "bottom", "left", "right")


def read_images(path: str | Path) -> np.ndarray:
    """float32 [N, H, W, C] in [0, 1] from a PNG or .npz file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such image file: {path}")
    if path.suffix.lower() == ".npz":
        with np.load(path) as data:
            names = [n for n in ("images", "image", "samples") if n in data.files]
            if not names and len(data.files) != 1:
                raise ValueError(
                    f"{path} holds arrays {data.files}; name the images 'images' or keep one."
                )
            array = data[names[0] if names else data.files[0]]
    else:
        array = np.asarray(Image.open(path))
    return _as_nhwc(np.asarray(array), path)


def _as_nhwc(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == bool:
        array = array.astype(np.float32)
    array = np.asarray(array, np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"{path}: expected [N, H, W, C], [H, W, C] or [H, W]; got {array.shape}")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"{path}: float values must lie in [0, 1], found {array.min()}..{array.max()}"
        )
    return array[..., :3] if array.shape[-1] == 4 else array  # drop a PNG alpha channel


def check_images(images: np.ndarray, config, channels: tuple[int, ...], what: str) -> None:
    """Raises ValueError unless images are [N, S, S, C] with S = image_size, C in channels."""
    size = config.data.image_size
    if images.shape[1:3] != (size, size) or images.shape[-1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise ValueError(
            f"{what} must be {size}x{size} with {allowed} channel(s) (config.data.image_size, "
            f"config.data.num_channels), got {images.shape[1]}x{images.shape[2]} with "
            f"{images.shape[-1]} channel(s)."
        )


def read_mask(spec: str, images: np.ndarray) -> np.ndarray:
    """float32 mask [N, H, W, C] (1 = known) from a file or a half name, matched to images."""
    n, h, w, c = images.shape
    if spec in HALVES:
        mask = np.zeros((h, w, 1), np.float32)
        half = {
            "top": (slice(0, h // 2), slice(None)),
            "bottom": (slice(h // 2, None), slice(None)),
            "left": (slice(None), slice(0, w // 2)),
            "right": (slice(None), slice(w // 2, None)),
        }
        mask[half[spec]] = 1.0
    else:
        mask = read_images(spec)
        mask = (mask > 0).astype(np.float32)
        mask = mask[0] if mask.shape[0] == 1 else mask
    try:
        return np.broadcast_to(mask, images.shape).astype(np.float32)
    except ValueError:
        raise ValueError(
            f"mask {spec} has shape {mask.shape}; it must broadcast to the images' {images.shape} "
            "(e.g. [H, W], [H, W, 1] or one mask per image)."
        ) from None


def _score_setup(config, workdir, step):
    """(step, params, sde, score_fn_of(params), PC options) of the checkpoint at `step`."""
    step, params = restore_for_inference(workdir, config, step)
    score_model = build_score_model(config)
    s = config.sampling
    options = dict(
        predictor=str(s.predictor).lower(),
        corrector=str(s.corrector).lower(),
        snr=float(s.snr),
        n_steps=int(s.n_steps_each),
        probability_flow=bool(s.probability_flow),
        denoise=bool(s.noise_removal),
        eps=default_eps(score_model.sde),
    )
    return step, params, score_model.sde, score_model.score_fn, options


def run_inpaint(config, workdir, image_path, mask_spec, out, num_samples=4, step=None, seed=0):
    """Inpaints each image of image_path num_samples times; writes the grid and an .npz."""
    images = read_images(image_path)
    check_images(images, config, (config.data.num_channels,), f"Images in {image_path}")
    mask = read_mask(mask_spec, images)
    step, params, sde, score_fn_of, options = _score_setup(config, workdir, step)
    scaler, inverse = _scalers(config)

    @jax.jit
    def inpaint(params, key, image, mask):
        x = controllable.inpaint(key, score_fn_of(params), sde, scaler(image), mask, **options)
        return jnp.clip(inverse(x), 0.0, 1.0)

    reps = np.repeat(images, num_samples, 0), np.repeat(mask, num_samples, 0)
    samples = _batched(lambda k, a: inpaint(params, k, *a), reps, config.eval.batch_size, seed)
    columns = [images * mask, mask, *_per_input(samples, len(images), num_samples)]
    return _write(out, _table(columns), samples, step, "inpainted")


def run_colorize(config, workdir, image_path, out, num_samples=4, step=None, seed=0):
    """Colorizes each (gray or RGB) image of image_path num_samples times."""
    if config.data.num_channels != 3:
        raise ValueError(
            f"Colorization needs a 3-channel (RGB) model; config.data.num_channels is "
            f"{config.data.num_channels} for dataset {config.data.dataset}."
        )
    images = read_images(image_path)
    check_images(images, config, (1, 3), f"Images in {image_path}")
    gray = images if images.shape[-1] == 1 else np.asarray(controllable.to_gray(images))
    step, params, sde, score_fn_of, options = _score_setup(config, workdir, step)
    scaler, inverse = _scalers(config)

    @jax.jit
    def colorize(params, key, gray):
        x = controllable.colorize(key, score_fn_of(params), sde, scaler(gray), **options)
        return jnp.clip(inverse(x), 0.0, 1.0)

    reps = (np.repeat(gray, num_samples, 0),)
    samples = _batched(lambda k, a: colorize(params, k, *a), reps, config.eval.batch_size, seed)
    gray_rgb = np.repeat(gray, 3, -1)
    columns = [gray_rgb, *_per_input(samples, len(gray), num_samples)]
    return _write(out, _table(columns), samples, step, "colorized")


def run_cond_sample(
    config, workdir, cls_config, cls_workdir, label, num, scale, out, step=None, seed=0
):
    """num samples of class `label`: score + scale * grad log p_t(label | x) of the classifier."""
    classes = int(cls_config.classifier.num_classes)
    if not 0 <= label < classes:
        raise ValueError(
            f"--class {label} is out of range: the classifier has {classes} classes "
            f"(0..{classes - 1})."
        )
    # The classifier sees x_t through the perturbation kernel alone, which N does not change.
    cls_sde, score_sde = (dataclasses.replace(get_sde(c), N=1) for c in (cls_config, config))
    if cls_sde != score_sde:
        raise ValueError(
            f"The classifier was trained for {cls_sde} but the score model uses {score_sde} "
            "(N aside); train the classifier with the score model's SDE settings."
        )
    step, params, sde, score_fn_of, options = _score_setup(config, workdir, step)
    _, cls_params = restore_classifier(cls_workdir, cls_config)
    classifier = get_classifier(cls_config)
    scaler, inverse = _scalers(config)
    size, channels = config.data.image_size, config.data.num_channels

    @jax.jit
    def sample(params, cls_params, key, labels):
        log_lik = controllable.class_log_likelihood(
            get_logits_fn(sde, classifier, cls_params), labels
        )
        score_fn = controllable.conditional_score_fn(score_fn_of(params), log_lik, scale)
        x, _ = pc_sample(key, score_fn, sde, (labels.shape[0], size, size, channels), **options)
        return jnp.clip(inverse(x), 0.0, 1.0)

    labels = (np.full((num,), label, np.int32),)
    samples = _batched(
        lambda k, a: sample(params, cls_params, k, *a), labels, config.eval.batch_size, seed
    )

    @jax.jit
    def clean_logits(cls_params, x):  # the parameters are an argument, not constants
        return get_logits_fn(sde, classifier, cls_params)(x, jnp.zeros((x.shape[0],)))

    predicted = np.argmax(clean_logits(cls_params, scaler(samples)), axis=-1)
    logging.info(
        "The classifier at t = 0 assigns %.1f%% of the samples to class %d.",
        100.0 * np.mean(predicted == label),
        label,
    )

    return _write(out, image_grid(samples), samples, step, f"class-{label}")


def _scalers(config):
    return get_scaler(config), get_inverse_scaler(config)


def _batched(fn, arrays: tuple[np.ndarray, ...], batch: int, seed: int) -> np.ndarray:
    """fn(key, chunk) over chunks of at most `batch` rows (the last padded), concatenated."""
    total = len(arrays[0])
    outs = []
    for i, start in enumerate(tqdm(range(0, total, batch), desc="sampling", unit="batch")):
        chunk = tuple(a[start : start + batch] for a in arrays)
        rows = len(chunk[0])
        chunk = tuple(np.concatenate([c, np.repeat(c[-1:], batch - rows, 0)]) for c in chunk)
        outs.append(np.asarray(fn(jax.random.fold_in(jax.random.PRNGKey(seed), i), chunk))[:rows])
    return np.concatenate(outs)


def _per_input(samples: np.ndarray, n: int, k: int) -> list[np.ndarray]:
    """The k sample columns [n, H, W, C] of samples ordered input-major [n * k, ...]."""
    grouped = samples.reshape(n, k, *samples.shape[1:])
    return [grouped[:, j] for j in range(k)]


def _write(out, picture: np.ndarray, samples: np.ndarray, step: int, what: str) -> Path:
    """Writes picture (uint8 [H, W, C]) as out.png, upscaled to >= 64 pixels per image row,
    and the samples to out.npz."""
    out = Path(out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    upscale = max(1, 64 // samples.shape[1])
    picture = picture.repeat(upscale, 0).repeat(upscale, 1)
    Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(out)
    save_npz_atomic(out.with_suffix(".npz"), samples=samples)
    logging.info("Wrote %d %s samples of step %d to %s", len(samples), what, step, out)
    return out


def _table(columns: list[np.ndarray], padding: int = 1) -> np.ndarray:
    """uint8 picture of images columns[j][i] at row i, column j, separated by `padding`."""
    c = max(col.shape[-1] for col in columns)
    columns = [np.broadcast_to(col, col.shape[:-1] + (c,)) for col in columns]
    n, h, w, _ = columns[0].shape
    picture = np.zeros(
        (n * (h + padding) + padding, len(columns) * (w + padding) + padding, c), np.uint8
    )
    for j, col in enumerate(columns):
        pixels = np.clip(np.round(np.asarray(col, np.float64) * 255.0), 0, 255).astype(np.uint8)
        for i in range(n):
            top, left = padding + i * (h + padding), padding + j * (w + padding)
            picture[top : top + h, left : left + w] = pixels[i]
    return picture


def run_command(args, config) -> Path | None:
    """Dispatches the `score-jax` subcommands of controllable generation."""
    if args.command == "train-classifier":
        train_classifier(config, args.workdir)
        return None
    common = dict(step=args.step, seed=args.seed)
    if args.command == "inpaint":
        _check_positive(args.num_samples, "--num_samples")
        return run_inpaint(
            config, args.workdir, args.image, args.mask, args.out, args.num_samples, **common
        )
    if args.command == "colorize":
        _check_positive(args.num_samples, "--num_samples")
        return run_colorize(config, args.workdir, args.image, args.out, args.num_samples, **common)

    _check_positive(args.num, "--num")
    cls_config = load_config(args.classifier_config, [])
    return run_cond_sample(
        config,
        args.workdir,
        cls_config,
        args.classifier_workdir,
        args.label,
        args.num,
        args.scale,
        args.out,
        **common,
    )


def _check_positive(value: int, flag: str) -> None:
    if value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}.")
