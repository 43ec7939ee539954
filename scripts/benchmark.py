"""Benchmark of score-jax's compiled programs: network forward, training step, samplers, likelihood.

    python scripts/benchmark.py --config configs/bench/ve_ncsnpp_small.py --batch 16 \
        [--dtype float32|bfloat16] [--what train,sample,ode,likelihood] [--repeats 5] \
        [--n_jitted_steps 1,5] [--data synthetic|real] [--full] [--json out.json] \
        [--config.model.nf=64 ...]

Every figure is the library's own code path (models.get_score_fn, train.step, sampling,
likelihood), compiled ahead of time (the compile time is reported apart) and then timed as the
median of `--repeats` calls after one warm-up call, each call ended by block_until_ready.
Ratios relate each program to the bare network it is built on: a PC step to one forward per score
evaluation, a training step to one forward, a likelihood evaluation to one forward + one VJP.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from score_jax import parallel  # noqa: E402
from score_jax.config import load_config  # noqa: E402
from score_jax.data import get_dataset, get_scaler  # noqa: E402
from score_jax.hugepages import reexec_with_hugepages  # noqa: E402
from score_jax.likelihood import log_likelihood  # noqa: E402
from score_jax.models import get_model, get_score_fn, init_model  # noqa: E402
from score_jax.models.mlp import example_input_shape  # noqa: E402
from score_jax.objective import make_loss_fn  # noqa: E402
from score_jax.sampling import get_sampler  # noqa: E402
from score_jax.sde import get_sde  # noqa: E402
from score_jax.state import create_train_state  # noqa: E402
from score_jax.train.optimizer import get_optimizer  # noqa: E402
from score_jax.train.step import make_train_step  # noqa: E402

WHAT = ("train", "sample", "ode", "likelihood")
# Dense peak TFLOP/s per GPU from the vendor data sheets (SXM parts unless named): bfloat16 tensor
# cores, and float32 as XLA runs it by default on these GPUs (TF32 tensor cores). Checked in this
# order, so the PCIe entry wins over the plain name.
PEAK_TFLOPS = {
    "H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
    "H100": {"bfloat16": 989.4, "float32": 494.7},
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}
VERSIONED = ("jax", "jaxlib", "flax", "optax", "diffrax", "numpy", "ml_collections")


# ----------------------------------------------------------------------------- timing helpers


def compile_ahead(jitted, *args):
    """(compiled executable, seconds to lower and compile, XLA's FLOP count or None)."""
    tic = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - tic
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    flops = float(cost["flops"]) if cost and cost.get("flops", -1) > 0 else None
    return compiled, seconds, flops


def planned_bytes(compiled) -> int | None:
    """XLA's buffer plan for one call: arguments + outputs (less donated aliases) + temporaries.

    A property of the compiled program on this backend; on a GPU it bounds the device memory a
    call needs beyond what other programs hold."""
    try:
        m = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if m is None:
        return None
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )
    return int(total)


def median_times(
    calls: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, list[float]]]:
    """Median and all wall times (s) of `repeats` calls of each call() after one warm-up call;
    the calls are taken in turn, so that all see the same machine load."""
    for call in calls.values():
        jax.block_until_ready(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            tic = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - tic)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def peak_memory_bytes() -> tuple[str, int | None]:
    """('device', peak bytes in use) on an accelerator, else ('host_rss', this process's peak)."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return "device", int(stats["peak_bytes_in_use"])
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return "host_rss", int(rss_kib) * 1024


def device_peak_flops(dtype: str) -> float | None:
    """The device's dense peak FLOP/s for `dtype`, or None for CPUs and unlisted devices."""
    device = jax.devices()[0]
    if device.platform != "gpu":
        return None
    for name, peaks in PEAK_TFLOPS.items():
        if name in device.device_kind:
            return peaks[dtype] * 1e12
    return None


def row(name: str, seconds: float, times: list[float], compile_s: float | None, **extra) -> dict:
    return {
        "name": name,
        "median_ms": 1e3 * seconds,
        "times_ms": [1e3 * t for t in times],
        "compile_s": compile_s,
        **extra,
    }


def compiled_row(name: str, compile_s: float, **extra) -> dict:
    """A --compile_only measurement: the compile time, no timing."""
    return row(name, float("nan"), [], compile_s, compile_only=True, **extra)


# ----------------------------------------------------------------------------- the set-up


class Bench:
    """The config's network, SDE and inputs at one batch size, shared by every measurement."""

    def __init__(self, config, batch: int, repeats: int, compile_only: bool = False):
        self.config, self.batch, self.repeats = config, batch, repeats
        # Compile every program (into JAX's persistent cache when one is set) and time nothing.
        self.compile_only = compile_only
        self.sde = get_sde(config)
        self.model = get_model(config)
        self.continuous = bool(config.training.continuous)
        self.params = init_model(jax.random.PRNGKey(config.seed), config)["params"]
        self.shape = (batch, *example_input_shape(config)[1:])
        keys = jax.random.split(jax.random.PRNGKey(1), 4)
        self.x = jax.random.normal(keys[0], self.shape, jnp.float32)
        self.t = jax.random.uniform(keys[1], (batch,), minval=1e-3, maxval=1.0)
        self.probe = jax.random.rademacher(keys[2], self.shape, jnp.float32)
        unit = jax.random.uniform(keys[3], self.shape, jnp.float32)
        self.data = get_scaler(config)(unit)  # likelihood input: scaled data
        self.rows: dict[str, dict] = {}
        # Compiled reference programs ("forward", "forward+vjp"): re-timed alongside each
        # measurement, so that a ratio compares two medians taken under the same machine load.
        self.reference: dict[str, Callable[[], object]] = {}

    def score_fn(self, params, sde=None):
        sde = self.sde if sde is None else sde
        return get_score_fn(sde, self.model, {"params": params}, continuous=self.continuous)

    def time_with_reference(
        self, call: Callable[[], object], reference: str, repeats: int | None = None
    ) -> tuple[float, list[float], float]:
        """(median s, times s) of call() and the median s of the reference, taken in turn."""
        timed = median_times(
            {"call": call, "ref": self.reference[reference]}, repeats or self.repeats
        )
        return (*timed["call"], timed["ref"][0])


# ----------------------------------------------------------------------------- measurements


def bench_network(b: Bench, peak: float | None) -> None:
    """One score-network forward and one forward + VJP (the likelihood's unit of work)."""

    def forward(params, x, t):
        return b.score_fn(params)(x, t)

    def forward_vjp(params, x, t, v):
        score, vjp_fn = jax.vjp(lambda y: b.score_fn(params)(y, t), x)
        return score, vjp_fn(v)[0]

    compiled = {}
    for name, fn, args in (
        ("forward", forward, (b.params, b.x, b.t)),
        ("forward+vjp", forward_vjp, (b.params, b.x, b.t, b.probe)),
    ):
        executable, compile_s, flops = compile_ahead(jax.jit(fn), *args)
        b.reference[name] = functools.partial(executable, *args)
        compiled[name] = (compile_s, flops)
    if b.compile_only:
        for name, (compile_s, flops) in compiled.items():
            b.rows[name] = compiled_row(name, compile_s, gflop=_g(flops))
        return
    timed = median_times(b.reference, b.repeats)
    for name, (seconds, times) in timed.items():
        compile_s, flops = compiled[name]
        mfu = flops / seconds / peak if flops and peak else None
        b.rows[name] = row(name, seconds, times, compile_s, gflop=_g(flops), mfu=mfu)
    b.rows["forward+vjp"]["ratio_to_forward"] = timed["forward+vjp"][0] / timed["forward"][0]


def _g(flops: float | None) -> float | None:
    return None if flops is None else flops / 1e9


def _raw_images(config, shape, rng: np.random.Generator) -> np.ndarray:
    """Synthetic dataset output of `shape`: uint8 images, or float points for MIXTURE."""
    if config.data.dataset == "MIXTURE":
        return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _real_data_config(config, batch: int, workdir: str):
    """The config itself when its data are at hand (built-in or local files), else the same
    config reading a generated .npz of random uint8 images of the config's shape."""
    if config.data.dataset in ("DIGITS", "MIXTURE") or config.data.get("path"):
        return config
    size, channels = config.data.image_size, config.data.num_channels
    images = np.random.default_rng(0).integers(0, 256, (8 * batch, size, size, channels), np.uint8)
    path = os.path.join(workdir, "images.npz")
    np.savez(path, images=images)
    real = copy.deepcopy(config)
    with real.unlocked():
        real.data.dataset = "npz"
        real.data.path = path
    return real


def _threaded_step(compiled, state):
    """call(images) -> metrics of compiled(state, images), passing on the donated state."""
    holder = [state]

    def call(images):
        holder[0], metrics = compiled(holder[0], images)
        return metrics

    return call


def _batch_reader(config, batch: int, k: int, mesh, workdir: str):
    """(read() -> global images [k, batch, ...] from score_jax.data, close, dataset name)."""
    real = _real_data_config(config, batch, workdir)
    batches = iter(get_dataset(real, "train", batch_size=batch, shuffle=True, seed=0))

    def read():
        stacked = np.stack([next(batches)["image"] for _ in range(k)])
        return parallel.host_batch_to_global(stacked, mesh, batch_axis=1)

    return read, batches.close, real.data.dataset


def bench_train(
    b: Bench, n_jitted: list[int], data: str, peak: float | None, unroll: bool = False
) -> None:
    """Training steps (forward, backward, Adam, EMA) per call of make_train_step's program.

    With data="real" each call also reads its batches through score_jax.data (the training
    loop's path, prefetch thread included); real and synthetic calls alternate, so both medians
    see the same machine load (and so does the forward the ratio is taken to). `unroll` is
    make_train_step's choice between lax.scan (False) and unrolled steps."""
    config, mesh = b.config, parallel.make_mesh()
    optimizer = get_optimizer(config)
    loss_fn = make_loss_fn(config, b.sde, b.model.apply, True)
    rng = np.random.default_rng(0)
    n_devices = mesh.devices.size
    for k in n_jitted:
        step = make_train_step(config, loss_fn, optimizer, mesh, unroll=unroll)
        state = create_train_state(b.params, optimizer, jax.random.PRNGKey(0))
        state = parallel.replicate(state, mesh)
        raw = _raw_images(config, (k, *b.shape), rng)
        images = parallel.host_batch_to_global(raw, mesh, batch_axis=1)
        compiled, compile_s, flops = compile_ahead(step, state, images)
        plan = planned_bytes(compiled)
        if b.compile_only:
            name = f"train (n_jitted_steps={k})"
            b.rows[name] = compiled_row(name, compile_s, plan_mib=plan and plan / 2**20)
            continue
        call = _threaded_step(compiled, state)
        calls = {"synthetic": functools.partial(call, images), "forward": b.reference["forward"]}
        with tempfile.TemporaryDirectory() as workdir:
            if data == "real":
                read, close, dataset = _batch_reader(config, b.batch, k, mesh, workdir)
                calls["real"] = lambda read=read, call=call: call(read())
            timed = median_times(calls, b.repeats)
            if data == "real":
                close()  # stops the prefetch thread
        forward = timed.pop("forward")[0]
        for kind, (seconds, times) in timed.items():
            real = kind == "real"
            name = f"train{' real data' if real else ''} (n_jitted_steps={k})"
            per_step = seconds / k
            b.rows[name] = row(
                name,
                per_step,
                [t / k for t in times],
                None if real else compile_s,
                images_per_s_per_device=b.batch / per_step / n_devices,
                # XLA counts a loop body once, so FLOPs are reported for single steps only.
                gflop=_g(flops) if k == 1 and not real else None,
                mfu=flops / per_step / peak if flops and peak and k == 1 else None,
                dataset=dataset if real else None,
                plan_mib=None if real or plan is None else plan / 2**20,
                ratio_to_forward=per_step / forward,
                forward_ms_alongside=1e3 * forward,
            )
        if data == "real":
            synthetic = b.rows[f"train (n_jitted_steps={k})"]["median_ms"]
            b.rows[f"train real data (n_jitted_steps={k})"]["ratio_to_synthetic"] = (
                b.rows[f"train real data (n_jitted_steps={k})"]["median_ms"] / synthetic
            )


def _with(config, **changes):
    """A copy of `config` with dotted keys changed (`{"model.num_scales": 8}`)."""
    new = copy.deepcopy(config)
    with new.unlocked():
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = new
            for p in parents:
                node = node[p]
            node[leaf] = value
    return new


def _time_sampler(b: Bench, config, repeats: int) -> tuple[float, list, float, int, float]:
    """Times config's sampler (get_sampler) under one jit with the parameters as an argument:
    (median s, times, compile s, NFE, median s of the forward timed alongside)."""
    sde = get_sde(config)
    sample_fn = get_sampler(config, sde, b.shape)

    @jax.jit
    def sample(params, key):
        return sample_fn(key, b.score_fn(params, sde))

    key = jax.random.PRNGKey(2)
    compiled, compile_s, _ = compile_ahead(sample, b.params, key)
    if b.compile_only:
        return None, [], compile_s, None, None
    nfe = int(compiled(b.params, key)[1])
    seconds, times, forward = b.time_with_reference(
        lambda: compiled(b.params, key), "forward", repeats
    )
    return seconds, times, compile_s, nfe, forward


def bench_pc(b: Bench, pc_steps: int, full: bool) -> None:
    """A PC step (the compiled loop over pc_steps noise levels, divided) and optionally a full
    sample at the config's number of levels."""
    config = _with(b.config, **{"sampling.method": "pc", "model.num_scales": pc_steps})
    seconds, times, compile_s, nfe, forward = _time_sampler(b, config, b.repeats)
    if b.compile_only:
        b.rows["pc step"] = compiled_row("pc step", compile_s)
        return
    per_level = nfe / pc_steps
    b.rows["pc step"] = row(
        "pc step",
        seconds / pc_steps,
        [t / pc_steps for t in times],
        compile_s,
        forwards_per_step=per_level,
        ratio_to_forwards=seconds / pc_steps / (per_level * forward),
        forward_ms_alongside=1e3 * forward,
    )
    if full:
        config = _with(b.config, **{"sampling.method": "pc"})
        seconds, times, compile_s, nfe, _ = _time_sampler(b, config, 1)
        b.rows["pc full sample"] = row("pc full sample", seconds, times, compile_s, nfe=nfe)


def bench_ode(b: Bench) -> None:
    """The probability-flow ODE sampler (adaptive): NFE and time per NFE."""
    config = _with(b.config, **{"sampling.method": "ode"})
    seconds, times, compile_s, nfe, forward = _time_sampler(b, config, b.repeats)
    if b.compile_only:
        b.rows["ode sample"] = compiled_row("ode sample", compile_s)
        return
    b.rows["ode sample"] = row(
        "ode sample",
        seconds,
        times,
        compile_s,
        nfe=nfe,
        ms_per_nfe=1e3 * seconds / nfe,
        ratio_to_forward=seconds / nfe / forward,
        forward_ms_alongside=1e3 * forward,
    )


def bench_likelihood(b: Bench) -> None:
    """log_likelihood (probability-flow ODE + Hutchinson divergence): time per NFE."""

    @jax.jit
    def likelihood(params, key, x):
        return log_likelihood(key, b.score_fn(params), b.sde, x)

    key = jax.random.PRNGKey(3)
    compiled, compile_s, _ = compile_ahead(likelihood, b.params, key, b.data)
    if b.compile_only:
        b.rows["likelihood"] = compiled_row("likelihood", compile_s)
        return
    nfe = int(compiled(b.params, key, b.data)[2])
    seconds, times, unit = b.time_with_reference(
        lambda: compiled(b.params, key, b.data), "forward+vjp"
    )
    b.rows["likelihood"] = row(
        "likelihood",
        seconds,
        times,
        compile_s,
        nfe=nfe,
        ms_per_nfe=1e3 * seconds / nfe,
        ratio_to_forward_vjp=seconds / nfe / unit,
        forward_vjp_ms_alongside=1e3 * unit,
    )


# ----------------------------------------------------------------------------- report


def environment() -> dict:
    device = jax.devices()[0]
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "device": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_HEADER = f"{'measurement':<36} {'compile s':>9} {'median ms':>10}  derived"


def format_table(rows: dict[str, dict]) -> str:
    """One line per measurement: compile time, median, and the derived figures."""
    return "\n".join([TABLE_HEADER, *(format_row(r) for r in rows.values())])


def format_row(r: dict) -> str:
    """A measurement's table line."""
    derived = []
    for key, label, spec in (
        ("images_per_s_per_device", "img/s/dev", ".1f"),
        ("forwards_per_step", "forwards/step", ".0f"),
        ("ratio_to_forwards", "x forwards", ".3f"),
        ("ratio_to_forward", "x forward", ".3f"),
        ("nfe", "NFE", "d"),
        ("ms_per_nfe", "ms/NFE", ".1f"),
        ("ratio_to_forward_vjp", "x (fwd+vjp)", ".3f"),
        ("ratio_to_synthetic", "x synthetic", ".3f"),
        ("gflop", "GFLOP", ".2f"),
        ("mfu", "MFU", ".1%"),
        ("plan_mib", "XLA plan MiB", ".0f"),
        ("dataset", "data", "s"),
    ):
        if r.get(key) is not None:
            derived.append(f"{label} {format(r[key], spec)}")
    line = f"{r['name']:<36} {_fmt(r['compile_s'], '9.1f')} {r['median_ms']:>10.1f}  "
    return line + ", ".join(derived)


def use_compilation_cache(required: bool) -> None:
    """Caches every compiled program in JAX_COMPILATION_CACHE_DIR, when it is set, whatever its
    compile time (JAX's default skips programs that compile in under a second)."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        if required:
            raise SystemExit("--compile_only needs JAX_COMPILATION_CACHE_DIR (a folder) to fill")
        return
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config file (get_config())")
    parser.add_argument("--batch", type=int, default=None, help="default: training.batch_size")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--what", default=",".join(WHAT), help=f"subset of {','.join(WHAT)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n_jitted_steps", default="1", help="comma list, e.g. 1,5")
    parser.add_argument(
        "--train_unroll",
        choices=("false", "true"),
        default="false",
        help="make_train_step's unroll (default: the steps in one lax.scan)",
    )
    parser.add_argument("--pc_steps", type=int, default=4, help="noise levels of the PC step")
    parser.add_argument("--full", action="store_true", help="also a full PC sample")
    parser.add_argument("--data", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument(
        "--compile_only",
        action="store_true",
        help="compile every program into JAX's persistent compilation cache "
        "(JAX_COMPILATION_CACHE_DIR, required) and time nothing; a later run with the same "
        "arguments then loads them instead of compiling",
    )
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(
            f"unrecognized arguments: {' '.join(bad)} (overrides look like --config.a.b=V)"
        )
    what = [w for w in args.what.split(",") if w]
    unknown = sorted(set(what) - set(WHAT))
    if unknown:
        parser.error(f"--what: unknown {unknown}; choose from {list(WHAT)}")
    args.what = what
    try:
        args.n_jitted_steps = [int(k) for k in args.n_jitted_steps.split(",")]
    except ValueError:
        parser.error(f"--n_jitted_steps must be a comma list of ints, got {args.n_jitted_steps!r}")
    if min(args.n_jitted_steps) < 1 or args.repeats < 1 or args.pc_steps < 1:
        parser.error("--n_jitted_steps, --repeats and --pc_steps must be >= 1")
    return args, rest


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(argv)
    config = load_config(args.config, overrides)
    batch = args.batch or config.training.batch_size
    if batch % jax.device_count():
        raise SystemExit(f"--batch {batch} must be divisible by the {jax.device_count()} devices")
    config = _with(config, **{"model.dtype": args.dtype, "training.batch_size": batch})
    use_compilation_cache(args.compile_only)
    load_before = os.getloadavg()
    b = Bench(config, batch, args.repeats, args.compile_only)
    peak = device_peak_flops(args.dtype)
    steps = [functools.partial(bench_network, b, peak)]
    if "train" in args.what:
        unroll = args.train_unroll == "true"
        train = functools.partial(bench_train, b, args.n_jitted_steps, args.data, peak, unroll)
        steps.append(train)
    if "sample" in args.what:
        steps.append(functools.partial(bench_pc, b, args.pc_steps, args.full))
    if "ode" in args.what:
        steps.append(functools.partial(bench_ode, b))
    if "likelihood" in args.what:
        steps.append(functools.partial(bench_likelihood, b))
    print(TABLE_HEADER, file=sys.stderr, flush=True)
    for run in steps:  # progress on stderr, the final table on stdout
        done = set(b.rows)
        run()
        for name in b.rows.keys() - done:
            print(format_row(b.rows[name]), file=sys.stderr, flush=True)
    memory_kind, memory = peak_memory_bytes()
    result = {
        "config": str(args.config),
        "overrides": overrides,
        "batch": batch,
        "n_params": int(sum(leaf.size for leaf in jax.tree.leaves(b.params))),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "environment": environment(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "peak_memory": {"kind": memory_kind, "bytes": memory},
        "rows": b.rows,
    }
    env = result["environment"]
    print(f"{args.config}  batch {batch}  {args.dtype}  on {env['device']} ({env['platform']})")
    print(format_table(b.rows))
    print(f"peak memory ({memory_kind}): {memory / 2**20:.0f} MiB; load {load_before}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    reexec_with_hugepages()  # as the score-jax command does: see score_jax/hugepages.py
    main()
