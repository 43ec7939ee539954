"""Every shell command of the README and the user guide runs, with small sizes.

The commands are the lines of the ```bash blocks (continuations joined, `&&` chains split). Each
is either run, in document order, in one scratch working directory outside the repository (so
`--config configs/...` resolves to the shipped configs, as after an install), with size flags
appended (`SMALL`: later flags win over the documented ones), or listed in `NOT_RUNNABLE` with
the reason. A command that is neither fails the first test, so the documents cannot grow a
command that nothing runs.
"""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
from conftest import REPO

from score_jax.cli import build_parser
from score_jax.config import load_config

DOCUMENTS = [REPO / "README.md", REPO / "docs" / "guide.md"]

# Command prefix -> why a test does not run it.
NOT_RUNNABLE = {
    "python3 -m venv": "creates a virtual environment; the tests run inside one",
    ". .venv/bin/activate": "activates that environment",
    "pip install -e": "an editable install of the checkout the tests run from",
    'pip install "score-jax @ git+': "downloads the package from the repository; "
    "test_cli_config installs a wheel built from the checkout instead",
    "pip install tensorflow": "downloads TensorFlow, only needed to prepare TFDS data",
    "tfds build": "downloads CIFAR-10 (TensorFlow needed)",
    "python -m pytest -q": "the test suite itself",
    "ruff check .": "the lint step of CI, over the whole checkout",
    "ruff format --check .": "the lint step of CI, over the whole checkout",
    "score-jax train --config configs/ve/cifar10_ncsnpp_continuous.py": "CIFAR-10 download",
    "score-jax fid-stats": "CIFAR-10 download and the FID Inception weights (test_eval_cli "
    "computes statistics with synthetic weights)",
    "score-jax convert": "an official checkpoint download (test_convert converts a synthetic one)",
    "score-jax colorize": "an RGB model (test_controllable_cli colorizes with a small one)",
    "python scripts/benchmark.py": "minutes of timing runs (test_benchmark runs every measurement "
    "of the script at a tiny size)",
    "head=$(scontrol": "a SLURM cluster",
    "srun ": "a SLURM cluster (test_multihost runs two processes on one machine)",
    "head=$(gcloud": "a Cloud TPU pod slice",
    "gcloud ": "a Cloud TPU pod slice",
}
# Placeholders of the README's command overview -> what the run uses.
PLACEHOLDERS = {"CFG": "configs/digits/vp_ddpmpp.py", "DIR": "runs/digits"}
FEW_STEPS = ["--config.training.n_iters=2", "--config.training.log_freq=1"]
FEW_NOISE_LEVELS = ["--config.model.num_scales=8"]  # PC and Langevin steps when sampling
# The digits network at half its depth and width (one resolution): a third of the compile time.
SMALL_NETWORK = {
    "configs/digits/vp_ddpmpp.py": ["--config.model.nf=8", "--config.model.ch_mult=(1,)"]
}
# Subcommand -> flags appended to make it small.
SMALL = {
    "train": [*FEW_STEPS, "--config.training.final_report=False"],
    "train-classifier": FEW_STEPS,
    "sample": ["--num", "4", *FEW_NOISE_LEVELS],
    "likelihood": [],  # 297 digits through the ODE of a 2-step model: cheap
    "eval": [],  # the digits config evaluates the loss only
    "nfe-report": ["--num", "8", "--samplers", "dpm_solver++:4", *FEW_NOISE_LEVELS],
    "inpaint": ["--num_samples", "2", *FEW_NOISE_LEVELS],
    "cond-sample": ["--num", "4", *FEW_NOISE_LEVELS],
}


def bash_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks of a Markdown text, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if not line or line.startswith("#"):
                continue
            commands.extend(part.strip() for part in line.split(" && "))
    return commands


def documented_commands() -> list[str]:
    return [c for path in DOCUMENTS for c in bash_commands(path.read_text())]


def skip_reason(command: str) -> str | None:
    return next((r for prefix, r in NOT_RUNNABLE.items() if command.startswith(prefix)), None)


def small_form(command: str) -> list[str] | None:
    """argv of the command at small size, or None if the test has no way to run it."""
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(command)]
    env = []
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        env.append(words.pop(0))
    if len(words) < 2 or words[0] != "score-jax" or words[1] not in SMALL:
        return None
    words = [w for w in words if not (w.startswith("[") and w.endswith("]"))]  # optional flags
    config = words[words.index("--config") + 1] if "--config" in words else None
    return ["env", *env, *words, *SMALL[words[1]], *SMALL_NETWORK.get(config, [])]


def test_every_command_is_run_or_listed():
    commands = documented_commands()
    assert len(commands) > 10  # the blocks were found
    unknown = [c for c in commands if skip_reason(c) is None and small_form(c) is None]
    assert not unknown, f"commands neither run by this test nor listed in NOT_RUNNABLE: {unknown}"
    assert any(small_form(c) for c in commands)


def write_inputs(folder) -> None:
    """The input files the documented commands name: held-out digits for inpainting."""
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images[-4:] * (255 / 16)).astype(np.uint8)[..., None]
    for name in ("x.npz", "digits.npz"):
        np.savez(folder / name, images=images)


def parses(words: list[str]) -> None:
    """What `score-jax` checks before it runs: the flags and every --config.* override."""
    overrides = [w for w in words if w.startswith("--config.")]
    args = build_parser().parse_args([w for w in words if not w.startswith("--config.")])
    load_config(args.config, overrides)


def test_documented_commands_run(tmp_path, monkeypatch):
    """Each subcommand runs once per config, in document order (README, then the guide); a
    repeat with other flags (another --num, --out or override) is checked as the command line
    checks it before running, which is where a renamed flag or config key would fail."""
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # conftest's 4 devices
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    env["TQDM_DISABLE"] = "1"
    ran, seen = [], set()
    for command in documented_commands():
        argv = small_form(command)
        if argv is None or skip_reason(command) is not None:
            continue
        words = argv[argv.index("score-jax") + 1 :]
        kind = (words[0], words[words.index("--config") + 1])
        if kind in seen:
            parses(words)
            continue
        seen.add(kind)
        result = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\nran as {argv}\n{output[-3000:]}"
        ran.append(command)
    assert len(ran) >= 8, ran
    # The commands wrote what the documents say they write.
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "samples.npz").is_file()
    assert (tmp_path / "runs/inpaint.png").is_file() and (tmp_path / "runs/class3.png").is_file()
