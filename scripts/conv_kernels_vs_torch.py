"""Every convolution of a config's network forward, timed alone in XLA and in PyTorch.

    python scripts/conv_kernels_vs_torch.py --config configs/bench/vp_ddpmpp_small.py \
        --batch 16 --threads 2 [--repeats 20] [--json out.json]

Separates the convolution library from the rest of a forward pass: XLA:CPU runs convolutions
with Eigen's kernels, PyTorch with oneDNN's. Per distinct convolution (input shape, kernel shape,
strides, padding, dilation) of the network's forward, one jitted `lax.conv_general_dilated`
(NHWC, HWIO) and one `torch.nn.functional.conv2d` (NCHW, as the official code runs), each the
median of --repeats calls after a warm-up (`benchmark.median_times`), XLA's then PyTorch's.
Single calls carry dispatch and thread wake-up costs that a whole forward does not, so compare
the two columns, not a column with a forward.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import jaxprs_in_params

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from benchmark import median_times  # noqa: E402

from score_jax.config import load_config  # noqa: E402
from score_jax.models import get_model, init_model  # noqa: E402

# (input NHWC shape, kernel HWIO shape, strides, padding, rhs dilation)
ConvShape = tuple[tuple[int, ...], tuple[int, ...], tuple, tuple, tuple]


def conv_shapes(fn: Callable, *args) -> collections.Counter:
    """How often each convolution (a ConvShape) occurs in fn(*args), nested jaxprs included.

    Only plain convolutions are supported (no input dilation, one feature group)."""
    counts: collections.Counter = collections.Counter()

    def walk(jaxpr) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                p = eqn.params
                if tuple(p["lhs_dilation"]) != (1, 1) or p["feature_group_count"] != 1:
                    raise ValueError(f"unsupported convolution: {p}")
                key = (
                    tuple(eqn.invars[0].aval.shape),
                    tuple(eqn.invars[1].aval.shape),
                    tuple(p["window_strides"]),
                    tuple(tuple(pad) for pad in p["padding"]),
                    tuple(p["rhs_dilation"]),
                )
                counts[key] += 1
            for sub in jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


def time_shape(shape: ConvShape, repeats: int) -> tuple[float, float]:
    """(XLA ms, PyTorch ms) of one convolution of `shape` on random inputs."""
    import torch

    x_shape, w_shape, strides, padding, dilation = shape
    if any(lo != hi for lo, hi in padding):
        raise ValueError(f"asymmetric padding {padding} has no conv2d equivalent")
    x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
    w = jax.random.normal(jax.random.PRNGKey(1), w_shape)
    numbers = ("NHWC", "HWIO", "NHWC")
    compiled = (
        jax.jit(
            lambda a, b: lax.conv_general_dilated(
                a, b, strides, padding, rhs_dilation=dilation, dimension_numbers=numbers
            )
        )
        .lower(x, w)
        .compile()
    )
    x_t = torch.randn(x_shape[0], x_shape[3], x_shape[1], x_shape[2])
    w_t = torch.randn(w_shape[3], w_shape[2], w_shape[0], w_shape[1])
    pad = tuple(lo for lo, _ in padding)
    conv = torch.nn.functional.conv2d
    # One library after the other: taken in turn, each call would wake the threads of a pool
    # the other had just left idle (the sums came out 1.5-1.6x apart instead of 1.4x).
    xla = median_times({"xla": lambda: compiled(x, w)}, repeats)["xla"][0]
    with torch.no_grad():
        call = lambda: conv(x_t, w_t, stride=strides, padding=pad, dilation=dilation)  # noqa: E731
        torch_s = median_times({"torch": call}, repeats)["torch"][0]
    return 1e3 * xla, 1e3 * torch_s


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    model = get_model(config)
    params = init_model(jax.random.PRNGKey(0), config)["params"]
    size, channels = config.data.image_size, config.data.num_channels
    x = jnp.zeros((args.batch, size, size, channels))
    t = jnp.ones((args.batch,))
    shapes = conv_shapes(lambda p: model.apply({"params": p}, x, t, train=False), params)
    rows, total = [], {"xla_ms": 0.0, "torch_ms": 0.0}
    for shape, count in sorted(shapes.items()):
        xla_ms, torch_ms = time_shape(shape, args.repeats)
        rows.append(
            dict(count=count, input=shape[0], kernel=shape[1], xla_ms=xla_ms, torch_ms=torch_ms)
        )
        total["xla_ms"] += count * xla_ms
        total["torch_ms"] += count * torch_ms
        name = f"{count:3d} x {str(shape[0]):18s} {str(shape[1]):16s}"
        print(f"{name} XLA {xla_ms:6.2f}  PyTorch {torch_ms:6.2f} ms")
    n = sum(shapes.values())
    sums = f"XLA {total['xla_ms']:.1f} ms, PyTorch {total['torch_ms']:.1f} ms"
    print(f"{n} convolutions, {len(shapes)} shapes: {sums}")
    result = {
        "config": args.config,
        "batch": args.batch,
        "rows": rows,
        "total": total,
        "convolutions": n,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
