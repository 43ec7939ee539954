"""Times the official PyTorch code's PC sampler step and likelihood NFE, for side-by-side CPU runs.

    SCORE_SDE_PYTORCH=/path/to/score_sde_pytorch python scripts/official_pytorch_sampling.py \
        --config vp/cifar10_ddpmpp_continuous --small --batch 16 --threads 2 --out pt.json

The counterpart of ../shared/bench/official_pytorch_gpu.py (which times the official training
step and forward) for the two other programs that `scripts/benchmark.py` times:
  * a PC step: the official `sampling.get_pc_sampler` with the config's predictor and corrector,
    run over --pc_steps noise levels (sde.N = pc_steps), wall time / pc_steps;
  * a likelihood NFE: the official `likelihood.get_likelihood_fn` (scipy RK45, rtol = atol =
    1e-5, Rademacher probes) on uniform data, wall time / the solver's NFE. The official
    ode_func evaluates the network twice per NFE (drift, then drift again under autograd for the
    divergence), as users of that code pay.
The official code is imported from $SCORE_SDE_PYTORCH, never copied; its CUDA extension build is
skipped at import and FIR resampling takes the official file's own pure-PyTorch path (the only
runtime changes). Untrained network (seed 0), float32.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time


def _import_official(repo: str):
    """The official modules this script uses, with the CUDA build skipped."""
    import torch.utils.cpp_extension as cpp_extension

    sys.path.insert(0, repo)
    build = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: None  # `op` compiles CUDA kernels on import
    try:
        import op  # noqa: F401
    finally:
        cpp_extension.load = build
    import models.up_or_down_sampling as resampling
    from op.upfirdn2d import upfirdn2d_native

    def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
        return upfirdn2d_native(x, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

    resampling.upfirdn2d = upfirdn2d
    from models import ddpm, ncsnpp  # noqa: F401  (registers the architectures)
    from models import utils as model_utils

    modules = ("sampling", "likelihood", "sde_lib")
    return model_utils, *(importlib.import_module(name) for name in modules)


def _official_sde(sde_lib, config, num_scales: int):
    model = config.model
    name = config.training.sde.lower()
    if name == "vesde":
        return sde_lib.VESDE(model.sigma_min, model.sigma_max, N=num_scales)
    sde_class = {"vpsde": sde_lib.VPSDE, "subvpsde": sde_lib.subVPSDE}[name]
    return sde_class(model.beta_min, model.beta_max, N=num_scales)


def _time_pc_step(sampling, sde, config, model, shape, repeats: int) -> dict:
    s = config.sampling
    sampler = sampling.get_pc_sampler(
        sde, shape, sampling.get_predictor(s.predictor.lower()),
        sampling.get_corrector(s.corrector.lower()), lambda x: x, s.snr, s.n_steps_each,
        s.probability_flow, config.training.continuous, s.noise_removal, 1e-3, "cpu",
    )  # fmt: skip
    sampler(model)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler(model)
        times.append((time.perf_counter() - start) / sde.N)
    ms = [1e3 * t for t in times]
    # The official sampler reports N (n_steps + 1) NFE whatever it ran; count the networks calls.
    forwards = (s.predictor.lower() != "none") + (s.corrector.lower() != "none") * s.n_steps_each
    return {"median_ms": statistics.median(ms), "times_ms": ms, "forwards_per_level": forwards}


def _time_likelihood_nfe(torch, likelihood, sde, config, model, shape) -> dict:
    centered = bool(config.data.centered)
    inverse_scaler = (lambda x: (x + 1.0) / 2.0) if centered else (lambda x: x)
    solve = likelihood.get_likelihood_fn(sde, inverse_scaler)
    generator = torch.Generator().manual_seed(1)
    unit = torch.rand(shape, generator=generator)
    data = unit * 2.0 - 1.0 if centered else unit
    start = time.perf_counter()
    _, _, nfe = solve(model, data)
    seconds = time.perf_counter() - start
    return {"ms_per_nfe": 1e3 * seconds / nfe, "nfe": int(nfe), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="official config, e.g. ve/cifar10_ncsnpp")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--small", action="store_true", help="configs/bench sizes (nf 32, ...)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--pc_steps", type=int, default=4, help="noise levels of the PC step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--what", default="pc,likelihood", help="subset of pc,likelihood")
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()

    import torch

    model_utils, sampling, likelihood, sde_lib = _import_official(os.environ["SCORE_SDE_PYTORCH"])
    config = importlib.import_module("configs." + args.config.replace("/", ".")).get_config()
    config.device = torch.device("cpu")
    if args.small:  # the sizes of configs/bench/*_small.py
        config.model.nf, config.model.ch_mult = 32, (1, 2, 2, 2)
        config.model.num_res_blocks, config.model.attn_resolutions = 2, (16,)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = model_utils.create_model(config).eval()
    shape = (args.batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    result = {"config": args.config, "batch": args.batch, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "results": {}}  # fmt: skip
    what = args.what.split(",")
    if "pc" in what:
        sde = _official_sde(sde_lib, config, args.pc_steps)
        pc = _time_pc_step(sampling, sde, config, model, shape, args.repeats)
        result["results"]["pc_step"] = pc
        print("pc step", {k: v for k, v in pc.items() if k != "times_ms"}, flush=True)
    if "likelihood" in what:
        sde = _official_sde(sde_lib, config, config.model.num_scales)
        nfe = _time_likelihood_nfe(torch, likelihood, sde, config, model, shape)
        result["results"]["likelihood"] = nfe
        print("likelihood", nfe, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
