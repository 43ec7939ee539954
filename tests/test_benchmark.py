"""Smoke test of scripts/benchmark.py: every measurement runs end to end and lands in the JSON."""

import importlib.util
import json
import math
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmark_module():
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_every_figure(benchmark_module, tmp_path, capsys):
    out = tmp_path / "bench.json"
    batch = 8
    benchmark_module.main(
        [
            "--config",
            str(REPO / "configs" / "toy" / "mixture_vp.py"),
            "--batch",
            str(batch),
            "--repeats",
            "1",
            "--pc_steps",
            "2",
            "--what",
            "train,sample,likelihood",
            "--data",
            "real",
            "--json",
            str(out),
            "--config.model.nf=16",
        ]
    )
    result = json.loads(out.read_text())
    rows = result["rows"]
    expected = {
        "forward",
        "forward+vjp",
        "train (n_jitted_steps=1)",
        "train real data (n_jitted_steps=1)",
        "pc step",
        "likelihood",
    }
    assert set(rows) == expected
    for r in rows.values():
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0, r
        assert len(r["times_ms"]) == 1
    # Derived figures follow from the medians: images/s per device, PC forwards per level
    # (euler_maruyama + no corrector: one score evaluation), time per NFE.
    train = rows["train (n_jitted_steps=1)"]
    per_device = batch / (train["median_ms"] / 1e3) / jax.device_count()
    assert train["images_per_s_per_device"] == pytest.approx(per_device, rel=1e-9)
    assert rows["pc step"]["forwards_per_step"] == 1
    likelihood = rows["likelihood"]
    assert likelihood["nfe"] > 0
    assert likelihood["ms_per_nfe"] == pytest.approx(likelihood["median_ms"] / likelihood["nfe"])
    assert rows["forward"]["gflop"] > 0  # from XLA's cost analysis
    # XLA's buffer plan holds at least the state: params, EMA and Adam's two moments (float32).
    assert train["plan_mib"] * 2**20 >= 4 * 4 * result["n_params"] > 0
    assert result["environment"]["versions"]["jax"] == jax.__version__
    assert result["environment"]["platform"] == "cpu"
    assert result["peak_memory"]["bytes"] > 0
    assert "likelihood" in capsys.readouterr().out  # the printed table


@pytest.mark.slow
def test_benchmark_image_network_ode_and_npz_data(benchmark_module, tmp_path):
    """The image path: a tiny NCSN++, real data from a generated .npz, the ODE sampler."""
    out = tmp_path / "bench.json"
    benchmark_module.main(
        [
            "--config",
            str(REPO / "configs" / "bench" / "ve_ncsnpp_small.py"),
            "--batch",
            "4",
            "--repeats",
            "1",
            "--what",
            "train,ode",
            "--data",
            "real",
            "--json",
            str(out),
            "--config.model.nf=8",
            "--config.model.ch_mult=(1, 1)",
            "--config.model.num_res_blocks=1",
            "--config.data.image_size=8",
        ]
    )
    rows = json.loads(out.read_text())["rows"]
    assert rows["train real data (n_jitted_steps=1)"]["dataset"] == "npz"
    assert rows["ode sample"]["nfe"] > 0


def test_compile_only_fills_the_persistent_cache_and_times_nothing(tmp_path):
    """--compile_only: every program compiled into JAX_COMPILATION_CACHE_DIR, no timings."""
    import os
    import subprocess
    import sys

    out, cache = tmp_path / "compiled.json", tmp_path / "cache"
    argv = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--compile_only"]
    argv += ["--config", str(REPO / "configs" / "toy" / "mixture_vp.py"), "--batch", "8"]
    argv += ["--what", "train,sample,likelihood", "--json", str(out), "--config.model.nf=16"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["SCORE_JAX_HUGEPAGES"] = "0"
    refused = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "JAX_COMPILATION_CACHE_DIR" in refused.stderr
    done = subprocess.run(
        argv, env={**env, "JAX_COMPILATION_CACHE_DIR": str(cache)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    names = {"forward", "forward+vjp", "train (n_jitted_steps=1)", "pc step", "likelihood"}
    assert set(rows) == names
    for r in rows.values():
        assert r["compile_only"] and r["times_ms"] == [] and r["compile_s"] > 0, r
    # One cache entry per compiled program at least (JAX also caches its small helpers).
    assert len([p for p in cache.iterdir() if p.name.startswith("jit_")]) >= len(names)
