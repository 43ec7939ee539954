"""The FID variant of Inception-v3 (TF graph `inception-2015-12-05` as ported by pytorch-fid).

`FIDInception()(images)` takes NHWC images in [0, 1] of any size and returns the 2048-d pool3
features (the FID feature) and the 1008-way logits (with the classifier bias). The blocks follow
pytorch-fid, not stock torchvision: average pools exclude padding (TF 'SAME'), the last block
max-pools, BatchNorm uses eps 1e-3. Every conv and matmul runs at full float32 precision so that
GPU/TPU results do not drift through TF32/bf16 passes.

`from_pytorch(state_dict)` turns pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (or any dict
with its keys) into Flax variables. Submodule names equal the PyTorch ones, so the mapping is
mechanical.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

HIGHEST = lax.Precision.HIGHEST
INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
BN_EPS = 1e-3


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of torch's bilinear resize (align_corners=False, no antialias)."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)  # negative coords clamp to 0
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def preprocess(images: jax.Array) -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> [B, 299, 299, 3] in [-1, 1], resized as the FID wrapper does.

    The resize is written as two small matrix products so that downsampling also matches
    torch's `interpolate(mode='bilinear', align_corners=False)`, which never antialiases.
    """
    _, height, width, _ = images.shape
    x = images.astype(jnp.float32)
    if (height, width) != (INPUT_SIZE, INPUT_SIZE):
        rows = jnp.asarray(_bilinear_matrix(height, INPUT_SIZE), jnp.float32)
        cols = jnp.asarray(_bilinear_matrix(width, INPUT_SIZE), jnp.float32)
        x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=HIGHEST)
        x = jnp.einsum("pw,bowc->bopc", cols, x, precision=HIGHEST)
    return 2.0 * x - 1.0


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool, padding 1, dividing by the number of valid pixels."""
    window, strides, pads = (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, window, strides, pads)
    return total / count


def _max_pool_3x3(x: jax.Array, stride: int, padding: int) -> jax.Array:
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pads)


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=self.stride,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            precision=HIGHEST,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def _conv(name: str, features: int, kernel=(1, 1), stride=1, padding=(0, 0)) -> BasicConv:
    return BasicConv(features, tuple(kernel), stride, tuple(padding), name=name)


class InceptionA(nn.Module):
    """Mixed_5b/c/d: [1x1, 5x5, double 3x3, avg-pool] branches."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = _conv("branch1x1", 64)(x)
        b5 = _conv("branch5x5_1", 48)(x)
        b5 = _conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(b5)
        b3 = _conv("branch3x3dbl_1", 64)(x)
        b3 = _conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3)
        b3 = _conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3)
        bp = _conv("branch_pool", self.pool_features)(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    @nn.compact
    def __call__(self, x):
        b3 = _conv("branch3x3", 384, (3, 3), stride=2)(x)
        bd = _conv("branch3x3dbl_1", 64)(x)
        bd = _conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd)
        bd = _conv("branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-e: factorised 7x7 branches."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = _conv("branch1x1", 192)(x)
        b7 = _conv("branch7x7_1", c)(x)
        b7 = _conv("branch7x7_2", c, (1, 7), padding=(0, 3))(b7)
        b7 = _conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = _conv("branch7x7dbl_1", c)(x)
        bd = _conv("branch7x7dbl_2", c, (7, 1), padding=(3, 0))(bd)
        bd = _conv("branch7x7dbl_3", c, (1, 7), padding=(0, 3))(bd)
        bd = _conv("branch7x7dbl_4", c, (7, 1), padding=(3, 0))(bd)
        bd = _conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = _conv("branch_pool", 192)(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    @nn.compact
    def __call__(self, x):
        b3 = _conv("branch3x3_1", 192)(x)
        b3 = _conv("branch3x3_2", 320, (3, 3), stride=2)(b3)
        b7 = _conv("branch7x7x3_1", 192)(x)
        b7 = _conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = _conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = _conv("branch7x7x3_4", 192, (3, 3), stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool, padding excluded) and Mixed_7c (max pool: the FID graph's quirk)."""

    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = _conv("branch1x1", 320)(x)
        b3 = _conv("branch3x3_1", 384)(x)
        b3a = _conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3)
        b3b = _conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)
        bd = _conv("branch3x3dbl_1", 448)(x)
        bd = _conv("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(bd)
        bda = _conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd)
        bdb = _conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)
        pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3_same(x)
        bp = _conv("branch_pool", 192)(pooled)
        return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class FIDInception(nn.Module):
    """images [B, H, W, 3] in [0, 1] -> (pool3 [B, 2048], logits [B, 1008]), float32."""

    def setup(self):
        self.Conv2d_1a_3x3 = BasicConv(32, (3, 3), stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, (3, 3))
        self.Conv2d_2b_3x3 = BasicConv(64, (3, 3), padding=(1, 1))
        self.Conv2d_3b_1x1 = BasicConv(80, (1, 1))
        self.Conv2d_4a_3x3 = BasicConv(192, (3, 3))
        self.Mixed_5b = InceptionA(32)
        self.Mixed_5c = InceptionA(64)
        self.Mixed_5d = InceptionA(64)
        self.Mixed_6a = InceptionB()
        self.Mixed_6b = InceptionC(128)
        self.Mixed_6c = InceptionC(160)
        self.Mixed_6d = InceptionC(160)
        self.Mixed_6e = InceptionC(192)
        self.Mixed_7a = InceptionD()
        self.Mixed_7b = InceptionE(max_pool=False)
        self.Mixed_7c = InceptionE(max_pool=True)
        self.fc = nn.Dense(NUM_CLASSES, precision=HIGHEST)

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.from_preprocessed(preprocess(images))

    def from_preprocessed(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, 299, 299, 3] in [-1, 1] (the output of `preprocess`) -> (pool3, logits)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool_3x3(x, 2, 0)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool_3x3(x, 2, 0)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a):
            x = block(x)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        pool3 = jnp.mean(x, axis=(1, 2))
        return pool3, self.fc(pool3)


@functools.cache
def _trace() -> tuple[dict[str, Any], list[str]]:
    """FIDInception's variable shapes and its BasicConv paths in call order, without computing.

    Call order equals the registration order of pytorch-fid's modules, hence its state_dict order.
    """
    conv_paths: list[str] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, BasicConv) and context.method_name == "__call__":
            conv_paths.append(".".join(context.module.path))
        return next_fun(*args, **kwargs)

    dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    with nn.intercept_methods(record):
        shapes = jax.eval_shape(FIDInception().init, jax.random.key(0), dummy)
    return shapes, conv_paths


def _torch_names(conv_paths: list[str]) -> dict[str, tuple[str, str, str]]:
    """torch key -> (collection, flax path, kind), in pytorch-fid's state_dict order."""
    names = {}
    for module in conv_paths:
        flax_path = module.replace(".", "/")
        names[f"{module}.conv.weight"] = ("params", f"{flax_path}/conv/kernel", "conv")
        names[f"{module}.bn.weight"] = ("params", f"{flax_path}/bn/scale", "vector")
        names[f"{module}.bn.bias"] = ("params", f"{flax_path}/bn/bias", "vector")
        names[f"{module}.bn.running_mean"] = ("batch_stats", f"{flax_path}/bn/mean", "vector")
        names[f"{module}.bn.running_var"] = ("batch_stats", f"{flax_path}/bn/var", "vector")
    names["fc.weight"] = ("params", "fc/kernel", "dense")
    names["fc.bias"] = ("params", "fc/bias", "vector")
    return names


def torch_state_dict_keys() -> list[str]:
    """The float tensors' keys in pytorch-fid's state_dict order (no num_batches_tracked)."""
    return list(_torch_names(_trace()[1]))


def from_pytorch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """pytorch-fid Inception state_dict (torch tensors or arrays, OIHW) -> FIDInception variables.

    Accepts an optional 'module.' prefix and ignores `num_batches_tracked`; any missing key,
    unexpected key or wrong shape raises ValueError naming it.
    """
    arrays = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.endswith("num_batches_tracked"):
            arrays[key] = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    shapes, conv_paths = _trace()
    names = _torch_names(conv_paths)
    missing = [k for k in names if k not in arrays]
    unexpected = [k for k in arrays if k not in names and not k.startswith("AuxLogits.")]
    if missing or unexpected:
        raise ValueError(
            "Not a pytorch-fid Inception state_dict: "
            f"{len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}."
        )
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for key, (collection, path, kind) in names.items():
        value = np.asarray(arrays[key], np.float32)
        if kind == "conv":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif kind == "dense":
            value = value.T
        node = shapes[collection]
        target = variables[collection]
        *parents, leaf = path.split("/")
        for part in parents:
            node = node[part]
            target = target.setdefault(part, {})
        if value.shape != node[leaf].shape:
            raise ValueError(
                f"Inception weight '{key}' has shape {value.shape} after conversion; "
                f"expected {node[leaf].shape}."
            )
        target[leaf] = jnp.asarray(value)
    return variables
