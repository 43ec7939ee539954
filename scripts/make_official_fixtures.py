"""Writes tests/fixtures/<name>.npz + <name>.json from the official PyTorch code, run on CPU.

    python scripts/make_official_fixtures.py /path/to/score_sde_pytorch /path/to/ncsnv2 \
        [--score-sde-commit HASH] [--ncsnv2-commit HASH] [--out tests/fixtures]

The two paths are checkouts of yang-song/score_sde_pytorch and ermongroup/ncsnv2; neither is
copied or edited. Runtime shims only: `torch.utils.cpp_extension.load` is stubbed while the
official `op` package is imported (it would build CUDA kernels), and the FIR resampler is pointed
at that package's own pure-PyTorch `upfirdn2d_native` (the path it takes on CPU anyway), with
its kernel cast to the input dtype so a float64 run works. `upsample_conv_2d` (the FIR
upsampling conv) crashes in torch on a negative-step slice; it is replaced by the same function
with that flip written as torch.flip (see import_score_sde), and layerspp's naive Upsample
passes 'nearest' where torch expects scale_factor (NearestAsSize). Both shims are needed by
any progressive='residual' output pyramid, which therefore never ran in the official PyTorch
code as published. score_sde_pytorch's NCSNv2 does not
run (its dilated convs are padded by 1), so NCSNv2 comes from ermongroup/ncsnv2, the code that
trained the official NCSNv2 checkpoints, wrapped in score_sde's `get_score_fn`.

Each fixture is a small randomised official network. Its weights and inputs are not stored:
they are a recipe (numpy PCG64 seeds and one rule per state_dict key, in the json) checked by a
sha256, so a 2M-parameter network costs a few bytes. The npz holds what cannot be recomputed:
the official times, labels (what `get_score_fn` fed the network), outputs and scores, and the
`sigmas` buffer. Image arrays are NCHW, as the official code computes them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

WEIGHT_SEED = 1234
INPUT_SEED = 2024
# What each rule draws from z ~ N(0, 1): small weights keep a deep random network's activations
# O(1); norm scales near 1; the Fourier W at its official init N(0, fourier_scale^2).
RULES = ("0.05z", "1+0.05z", "fourier_scale*z", "official")


def checkout_commit(root: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        sys.exit(f"{root} is not a git checkout; pass its commit hash (--*-commit).")


def import_score_sde(root: Path) -> SimpleNamespace:
    """The official modules, with the CUDA build stubbed and FIR on the native PyTorch path."""
    sys.path.insert(0, str(root))
    import torch.utils.cpp_extension as cpp_extension

    real_load = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: None
    try:
        importlib.import_module("op")
    finally:
        cpp_extension.load = real_load
    from op.upfirdn2d import upfirdn2d_native

    uds = importlib.import_module("models.up_or_down_sampling")

    def native(x, kernel, up=1, down=1, pad=(0, 0)):
        kernel = kernel.to(x.dtype)
        return upfirdn2d_native(x, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

    def upsample_conv_2d(x, w, k=None, factor=2, gain=1):
        # The official function flips w with w[..., ::-1, ::-1], a negative-step slice that
        # torch rejects ("step must be greater than zero"), so every FIR upsampling conv (the
        # residual output pyramid with fir=True) crashes. This is that function with the flip
        # written as torch.flip, which is what its TF/JAX original computes.
        out_c, in_c, kh, kw = w.shape
        k = uds._setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
        p = (k.shape[0] - factor) - (kw - 1)
        groups = x.shape[1] // in_c
        w = torch.flip(w.reshape(groups, -1, in_c, kh, kw), (-2, -1)).permute(0, 2, 1, 3, 4)
        x = torch.nn.functional.conv_transpose2d(
            x, w.reshape(groups * in_c, -1, kh, kw), stride=factor
        )
        return native(x, torch.tensor(k), pad=((p + 1) // 2 + factor - 1, p // 2 + 1))

    uds.upfirdn2d = native
    uds.upsample_conv_2d = upsample_conv_2d
    layerspp = importlib.import_module("models.layerspp")
    layerspp.F = NearestAsSize()
    for name in ("ncsnpp", "ddpm"):
        importlib.import_module(f"models.{name}")
    return SimpleNamespace(
        utils=importlib.import_module("models.utils"),
        sde_lib=importlib.import_module("sde_lib"),
        config=lambda path: importlib.import_module(f"configs.{path.replace('/', '.')}"),
    )


class NearestAsSize:
    """torch.nn.functional for layerspp, whose naive Upsample calls
    F.interpolate(x, (2H, 2W), 'nearest'): the mode lands in the scale_factor slot and torch
    raises "only one of size or scale_factor should be defined" (the same line in layers.py
    passes mode=). Here the third argument is the mode, as intended."""

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def interpolate(x, size, mode):
        return torch.nn.functional.interpolate(x, size=size, mode=mode)


def import_ncsnv2(root: Path):
    """ermongroup/ncsnv2's models/ncsnv2.py under an alias (score_sde also has a `models`)."""
    init = root / "models" / "__init__.py"
    alias = "ncsnv2_original_models"
    spec = importlib.util.spec_from_file_location(
        alias, init, submodule_search_locations=[str(init.parent)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{alias}.ncsnv2")


def key_rules(net: torch.nn.Module) -> dict[str, str]:
    """The randomisation rule of every state_dict key, in state_dict order."""
    rules = {}
    for prefix, module in net.named_modules():
        kind = type(module).__name__
        for name, _ in module.named_parameters(recurse=False):
            key = f"{prefix}.{name}" if prefix else name
            if kind == "GaussianFourierProjection":
                rules[key] = "fourier_scale*z"
            elif (isinstance(module, torch.nn.GroupNorm) and name == "weight") or (
                "InstanceNorm" in kind and name in ("alpha", "gamma")
            ):
                rules[key] = "1+0.05z"
            else:
                rules[key] = "0.05z"
        for name, _ in module.named_buffers(recurse=False):
            rules[f"{prefix}.{name}" if prefix else name] = "official"
    order = list(net.state_dict())
    assert sorted(order) == sorted(rules), "a state_dict entry is neither parameter nor buffer"
    return {key: rules[key] for key in order}


def recipe_weights(shapes: dict, rules: dict, fourier_scale: float, seed: int) -> dict:
    """float32 weights: one default_rng(seed), keys in state_dict order, z drawn in float64."""
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in shapes.items():
        rule = rules[key]
        if rule == "official":
            continue
        z = rng.standard_normal(shape)
        value = {"0.05z": 0.05 * z, "1+0.05z": 1 + 0.05 * z, "fourier_scale*z": fourier_scale * z}
        weights[key] = value[rule].astype(np.float32)
    return weights


def digest(arrays: dict) -> str:
    """sha256 over key names, shapes and float32 bytes, in the given order."""
    h = hashlib.sha256()
    for key, value in arrays.items():
        h.update(f"{key}{tuple(value.shape)}".encode())
        h.update(np.ascontiguousarray(value, np.float32).tobytes())
    return h.hexdigest()


def recipe_input(shape: tuple, centered: bool, seed: int) -> np.ndarray:
    """Data-like input: N(0, 1) for centered data, U[0, 1) otherwise (float64 draws -> f32)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) if centered else rng.random(shape)
    return x.astype(np.float32)


def randomise(net: torch.nn.Module, fourier_scale: float) -> dict:
    """Loads recipe weights into net; returns the json record of the recipe."""
    state = net.state_dict()
    rules = key_rules(net)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    weights = recipe_weights(shapes, rules, fourier_scale, WEIGHT_SEED)
    net.load_state_dict({**state, **{k: torch.from_numpy(v) for k, v in weights.items()}})
    return {
        "seed": WEIGHT_SEED,
        "rule": "np.random.default_rng(seed); for each key in state_dict order whose rule is not "
        "'official': z = rng.standard_normal(shape) (float64), value = rule(z).astype(float32)",
        "fourier_scale": fourier_scale,
        "keys": [[k, list(shapes[k]), rules[k]] for k in shapes],
        "sha256": digest(weights),
    }


class LabelRecorder(torch.nn.Module):
    """Passes (x, labels) to the network and keeps the labels the official score_fn made."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.labels = None

    def forward(self, x, labels):
        self.labels = labels.detach().clone()
        return self.net(x, labels)


def make_sde(official, kind: str, model_config):
    m = model_config
    if kind == "vesde":
        return official.sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
    cls = {"vpsde": official.sde_lib.VPSDE, "subvpsde": official.sde_lib.subVPSDE}[kind]
    return cls(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)


def evaluate(official, net, sde, x: np.ndarray, t: np.ndarray, continuous: bool) -> dict:
    """Official score_fn(x, t) in float32 and float64: labels, raw outputs, scores."""
    arrays = {}
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "_f64")):
        recorder = LabelRecorder(copy.deepcopy(net).to(dtype))
        for module in recorder.modules():
            if isinstance(module, torch.nn.Linear):  # the sinusoidal embedding is always f32
                module.register_forward_pre_hook(lambda mod, args: (args[0].to(mod.weight.dtype),))
        score_fn = official.utils.get_score_fn(sde, recorder, train=False, continuous=continuous)
        # Tensors the official forward creates itself (time embeddings) follow the default.
        torch.set_default_dtype(dtype)
        try:
            with torch.no_grad():
                score = score_fn(torch.from_numpy(x).to(dtype), torch.from_numpy(t).to(dtype))
                out = recorder.net(torch.from_numpy(x).to(dtype), recorder.labels)
        finally:
            torch.set_default_dtype(torch.float32)
        arrays[f"score{suffix}"] = score.numpy()
        arrays[f"out{suffix}"] = out.numpy()
        arrays[f"labels{suffix}"] = recorder.labels.numpy()
    # Float labels (VP) may round differently in float64; integer ones (VE) must agree.
    np.testing.assert_allclose(arrays["labels"], arrays["labels_f64"], rtol=1e-6)
    del arrays["labels_f64"]
    return arrays


def precision_record(arrays: dict) -> dict:
    """How far the official float32 run is from its float64 run: the floor of any port's error."""
    record = {}
    for key in ("out", "score"):
        ref, f64 = arrays[key].astype(np.float64), arrays[f"{key}_f64"]
        record[key] = {
            "max_abs_f32_minus_f64": float(np.abs(ref - f64).max()),
            "max_abs": float(np.abs(ref).max()),
            "ratio_to_port_tolerance": float(
                np.abs(ref - f64).max() / (1e-5 * np.abs(ref).max() + 1e-6)
            ),
        }
    return record


# --------------------------------------------------------------------------------- fixtures --

NCSNPP_SMALL = {
    "data.image_size": 16,
    "model.nf": 16,
    "model.ch_mult": (1, 2, 2),
    "model.num_res_blocks": 1,
    "model.attn_resolutions": (8,),
}

# name -> (official config, changes, times, why). Times avoid label rounding ties.
SCORE_SDE_FIXTURES = {
    "ddpm_vp_official_topology": (
        "vp/ddpm/cifar10",
        {"model.nf": 32},
        [0.0137, 0.7123],
        "The official CIFAR-10 DDPM topology (4 levels, 2 ResBlocks per level, attention at "
        "16) at nf=32 (GroupNorm(32) needs nf >= 32): VP discrete labels t*(N-1), unrounded "
        "floats, and score = -out / sqrt_1m_alphas_cumprod[int(labels)].",
    ),
    "ddpm_ve_official_topology": (
        "ve/cifar10_ddpm",
        {"model.nf": 32},
        [0.9, 0.25],
        "The same topology under the VE config: discrete VE labels round((T - t)(N-1)) index "
        "the descending sigmas and the output is divided by sigmas[labels] (scale_by_sigma).",
    ),
    "ncsnpp_residual_fir": (
        "ve/cifar10_ncsnpp_continuous",
        {**NCSNPP_SMALL, "model.progressive": "residual", "model.progressive_input": "residual"},
        [0.25, 0.8],
        "NCSN++ with residual input and output pyramids and FIR resampling (the CIFAR-10 VE "
        "network's input path; skip_rescale divides each pyramid sum by sqrt(2)), Fourier "
        "embedding, VE continuous labels sigma(t).",
    ),
    "ncsnpp_residual_discrete": (
        "ve/cifar10_ncsnpp",
        {
            **NCSNPP_SMALL,
            "model.progressive": "residual",
            "model.progressive_input": "residual",
            "model.fir": False,
            "model.resblock_type": "ddpm",
        },
        [0.9, 0.25],
        "NCSN++ residual pyramids with naive (non-FIR) resampling convs and DDPM-style "
        "ResBlocks, positional embedding, discrete VE: labels round((T - t)(N-1)) index sigmas.",
    ),
    "ncsnpp_cat": (
        "vp/cifar10_ddpmpp_continuous",
        {
            **NCSNPP_SMALL,
            "model.progressive": "output_skip",
            "model.progressive_input": "input_skip",
            "model.progressive_combine": "cat",
        },
        [0.25, 0.8],
        "DDPM++ with an input_skip pyramid merged by combine_method='cat' (conv1x1 of the "
        "pyramid concatenated before h, doubling the channels) and an output_skip pyramid; VP "
        "continuous labels 999 t, score = -out / std(t).",
    ),
}

# name -> (original class, nf, image size, times). Sizes are the smallest at which the
# deepest level (dilation 4, a 9-pixel kernel span) is still wider than the kernel.
NCSNV2_FIXTURES = {
    "ncsnv2_64": ("NCSNv2", 8, 32, [0.9, 0.25]),
    "ncsnv2_128": ("NCSNv2Deeper", 4, 64, [0.9, 0.25]),
    "ncsnv2_256": ("NCSNv2Deepest", 4, 128, [0.3, 0.66]),
}


def plain(value):
    """A json-able copy of a ConfigDict value (tuples -> lists, devices dropped)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not isinstance(v, torch.device)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def official_config(official, path: str, changes: dict):
    config = official.config(path).get_config()
    config.device = torch.device("cpu")
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


def run_fixture(official, net, config, sde, times: list, batch: int) -> tuple[dict, dict]:
    """Randomises net, evaluates the official score_fn; returns (npz arrays, json record)."""
    net.eval()
    scale = float(config.model.get("fourier_scale", 16.0))
    recipe = randomise(net, scale)
    size, channels = config.data.image_size, config.data.num_channels
    shape = (batch, channels, size, size)
    x = recipe_input(shape, bool(config.data.centered), INPUT_SEED)
    t = np.asarray(times[:batch], np.float32)
    arrays = evaluate(official, net, sde, x, t, bool(config.training.continuous))
    arrays["t"] = t
    precision = precision_record(arrays)
    del arrays["out_f64"], arrays["score_f64"]
    if np.array_equal(arrays["score"], arrays["out"]):  # VE: the score is the output
        del arrays["score"]
    buffers = {k: v.numpy() for k, v in net.state_dict().items() if k == "sigmas"}
    record = {
        "weights": recipe,
        "input": {
            "seed": INPUT_SEED,
            "shape": list(shape),
            "rule": "np.random.default_rng(seed): standard_normal(shape) if data.centered "
            "else random(shape), float64 draws cast to float32; NCHW",
            "centered": bool(config.data.centered),
            "sha256": digest({"x": x}),
        },
        "precision": precision,
    }
    return {**arrays, **buffers}, record


SHIMS = [
    "torch.utils.cpp_extension.load stubbed while the official `op` package is imported (it "
    "would build CUDA kernels); FIR resampling through op.upfirdn2d.upfirdn2d_native, the "
    "official CPU path, kernel cast to the input dtype.",
    "up_or_down_sampling.upsample_conv_2d: the official w[..., ::-1, ::-1] (a negative-step "
    "slice torch rejects) as torch.flip(w, (-2, -1)); used by FIR upsampling convs only "
    "(progressive='residual' with fir=True).",
    "layerspp.F.interpolate(x, size, 'nearest') read with 'nearest' as the mode (torch takes "
    "the third argument as scale_factor and raises); used by the naive Upsample only "
    "(progressive='residual' or resblock_type='ddpm' with fir=False).",
]

TOLERANCE = (
    "A float32 port must agree within 1e-5 * max|ref| + 1e-6 (max_error_ratio < 1 in "
    "tests/test_ddpm.py), the criterion of ../shared/reference/README.md. `precision` records "
    "how far the official float32 run itself is from its float64 run with the same weights "
    "(max_abs_f32_minus_f64, and that over the tolerance): the rounding floor any port shares "
    "(the official sinusoidal embedding stays float32 in that run; it is cast to float64 at the "
    "first Linear). Where `score` is absent (VE) the score is `out` itself."
)


def write(out_dir: Path, name: str, arrays: dict, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / f"{name}.npz", **arrays)
    meta["arrays"] = {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()}
    meta["tolerance"] = TOLERANCE
    meta["runtime_shims"] = SHIMS
    meta["torch_version"] = torch.__version__
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = (out_dir / f"{name}.npz").stat().st_size
    print(f"{name}: {size / 1e3:.0f} kB, precision {meta['precision']}")


def make_score_sde_fixtures(official, commit: str, out_dir: Path) -> None:
    for name, (path, changes, times, why) in SCORE_SDE_FIXTURES.items():
        config = official_config(official, path, changes)
        net = official.utils.get_model(config.model.name)(config)
        sde = make_sde(official, config.training.sde.lower(), config.model)
        arrays, record = run_fixture(official, net, config, sde, times, batch=2)
        meta = {
            "name": name,
            "what": why,
            "official_code": "yang-song/score_sde_pytorch",
            "official_commit": commit,
            "official_config_base": path,
            "changes": plain(changes),
            "config": plain(config),
            "model_class": type(net).__name__,
            "sde": f"{type(sde).__name__}(N={sde.N})",
            "score_fn_call": "models.utils.get_score_fn(sde, model, train=False, "
            f"continuous={bool(config.training.continuous)})(x, t)",
            **record,
        }
        write(out_dir, name, arrays, meta)


def ncsnv2_namespace(config, cls_nf: int, image_size: int) -> SimpleNamespace:
    """The original code's config for the same network as the score_sde NCSNv2 config."""
    return SimpleNamespace(
        data=SimpleNamespace(
            logit_transform=False, rescaled=False, channels=3, image_size=image_size
        ),
        model=SimpleNamespace(
            ngf=cls_nf,
            num_classes=config.model.num_scales,
            sigma_begin=config.model.sigma_max,
            sigma_end=config.model.sigma_min,
            sigma_dist="geometric",
            normalization="InstanceNorm++",
            nonlinearity="elu",
            spec_norm=False,
        ),
        device="cpu",
    )


def make_ncsnv2_fixtures(official, original, commits: dict, out_dir: Path) -> None:
    for name, (cls, nf, size, times) in NCSNV2_FIXTURES.items():
        changes = {"model.name": name, "model.nf": nf, "data.image_size": size}
        config = official_config(official, "ve/ncsnv2/cifar10", changes)
        theirs = ncsnv2_namespace(config, nf, size)
        net = getattr(original, cls)(theirs)
        sde = make_sde(official, "vesde", config.model)
        batch = 2
        arrays, record = run_fixture(official, net, config, sde, times, batch)
        meta = {
            "name": name,
            "what": f"{cls} of ermongroup/ncsnv2 (the code that trained the official NCSNv2 "
            f"checkpoints) at nf={nf}, {size}x{size}, under score_sde's discrete VE score_fn: "
            "labels round((T - t)(N-1)) index the 232 descending sigmas; out / sigmas[labels].",
            "official_code": "ermongroup/ncsnv2 (network), yang-song/score_sde_pytorch "
            "(config ve/ncsnv2/cifar10, sde_lib.VESDE, models.utils.get_score_fn)",
            "official_commit": commits,
            "official_config_base": "ve/ncsnv2/cifar10",
            "changes": plain(changes),
            "config": plain(config),
            "original_config": {"data": vars(theirs.data), "model": vars(theirs.model)},
            "model_class": cls,
            "sde": f"VESDE(N={sde.N})",
            "score_fn_call": "models.utils.get_score_fn(sde, model, train=False, "
            "continuous=False)(x, t)",
            **record,
        }
        write(out_dir, name, arrays, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("score_sde_pytorch", type=Path)
    parser.add_argument("ncsnv2", type=Path)
    parser.add_argument("--score-sde-commit")
    parser.add_argument("--ncsnv2-commit")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "tests/fixtures")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one summation order, whatever machine regenerates these
    commits = {
        "score_sde_pytorch": checkout_commit(args.score_sde_pytorch, args.score_sde_commit),
        "ncsnv2": checkout_commit(args.ncsnv2, args.ncsnv2_commit),
    }
    official = import_score_sde(args.score_sde_pytorch.resolve())
    original = import_ncsnv2(args.ncsnv2.resolve())
    make_score_sde_fixtures(official, commits["score_sde_pytorch"], args.out)
    make_ncsnv2_fixtures(official, original, commits, args.out)


if __name__ == "__main__":
    main()
