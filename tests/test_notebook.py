"""The notebooks run top to bottom as Colab runs them: in a fresh kernel, from a working directory
outside the repository, with small sizes; any cell error fails the test. Their printed claims
are then checked against ground truth."""

import json
import re
import tomllib

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
OFFICIAL = REPO / "notebooks" / "official_checkpoints.ipynb"
REPOSITORY = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SMALL = {
    "SCORE_JAX_QUICKSTART_STEPS": "100",
    "SCORE_JAX_QUICKSTART_SAMPLE_STEPS": "100",
}
# Run in the notebook's kernel after its last cell: the values the assertions check.
PROBE = """
import json as _json
print("PROBE" + _json.dumps({
    "right": float(right.mean()),
    "round_trip": float(jnp.max(jnp.abs(back - data))),
    "logp_error": float(jnp.max(jnp.abs(logp - exact))),
    "in_class": in_class,
    "colour_counts": np.bincount(nearest, minlength=5).tolist(),
    "gray_error": gray_error,
    "step": int(step),
    "titles": list(titles.values()),
    "grid_shapes": [list(g.shape) for g in grids.values()],
    "known_part_error": float(jnp.max(jnp.abs((filled - inverse_scaler(known)) * mask))),
    "endpoint_error": float(jnp.max(jnp.abs(
        jnp.concatenate([images[:, 0], images[:, -1]]) - inverse_scaler(known)
    ))),
    # For each decoded endpoint, the index of the nearest of the eight encoded digits.
    "endpoint_nearest": jnp.argmin(jnp.sum(jnp.abs(
        jnp.concatenate([images[:, 0], images[:, -1]])[:, None] - inverse_scaler(known)[None]
    ), axis=(2, 3, 4)), axis=1).tolist(),
}))
"""


def execute(path, cwd, probe: str | None = None) -> nbformat.NotebookNode:
    """The notebook at `path`, executed in a fresh python3 kernel whose working directory is cwd."""
    notebook = nbformat.read(path, as_version=4)
    if probe is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(probe))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def text_of(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream"
    )


def test_quickstart_runs_outside_the_repository(tmp_path, monkeypatch):
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SCORE_JAX_QUICKSTART_WORKDIR", str(tmp_path / "run"))
    # One CPU device, as in Colab's CPU runtime (conftest gives this process four).
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    notebook = execute(QUICKSTART, tmp_path, PROBE)
    values = json.loads(text_of(notebook.cells[-1]).split("PROBE", 1)[1])

    # The exact mixture's claims: 4000 samples, binomial standard error ~0.007 on the 0.3 weight.
    assert abs(values["right"] - 0.3) < 3 * (0.3 * 0.7 / 4000) ** 0.5 + 0.01
    assert values["round_trip"] < 5e-3  # the ODE at rtol = atol = 1e-5, there and back
    # Exact-trace ODE vs closed form: the likelihood tests hold this to 2e-3 nats for VP.
    assert values["logp_error"] < 2e-3
    # Guided by the exact classifier, a class-0 sample outside component 0 is a >5-sigma event.
    assert values["in_class"] == 1.0
    # Gray 1/3 is red, green or blue; black and white (gray 0 and 1) are 13 stds away.
    counts = values["colour_counts"]
    assert counts[3] == counts[4] == 0 and min(counts[:3]) > 30, counts
    # The known part ends at the observation's mean at t = eps: a(1e-3) differs from 1 by ~5e-5.
    assert values["gray_error"] < 1e-3
    assert values["known_part_error"] < 1e-3

    assert values["step"] == int(SMALL["SCORE_JAX_QUICKSTART_STEPS"])
    steps = int(SMALL["SCORE_JAX_QUICKSTART_SAMPLE_STEPS"])
    nfe = {t.split(":")[0]: int(re.search(r"(\d+) NFE", t)[1]) for t in values["titles"]}
    # PC: a predictor and a corrector evaluation per step; the reverse SDE one per step and one
    # for the final denoising step; the fast samplers their budget (+1 for that step).
    assert nfe["pc"] == 2 * steps and nfe["sde"] == steps + 1, nfe
    assert nfe["dpm_solver++"] in (20, 21) and nfe["heun"] in (20, 21), nfe
    assert all(shape == [36, 8, 8, 1] for shape in values["grid_shapes"])
    # Interpolation weights 0 and 1 decode the encoded digits (an ODE round trip): each is
    # nearest to its own digit, and within 0.1 of it in every pixel of [0, 1]. The round trip of
    # a barely trained network is stiff near t = eps; 0.052 was measured after 100 steps.
    assert values["endpoint_nearest"] == list(range(8))
    assert values["endpoint_error"] < 0.1


@pytest.mark.parametrize("path", [QUICKSTART, OFFICIAL], ids=lambda p: p.stem)
def test_install_cell_uses_the_repository_url(path):
    """The Colab install cell names the repository that pyproject.toml names, nothing else."""
    notebook = nbformat.read(path, as_version=4)
    source = next(c.source for c in notebook.cells if "REPOSITORY = " in c.source)
    assert f'REPOSITORY = "{REPOSITORY}"' in source
    assert "git+{REPOSITORY}" in source and "install -e" not in source.replace("`", "")


def test_official_notebook_says_what_to_download(tmp_path, monkeypatch):
    """Without the checkpoint file it stops at the check, naming the file, the source and the
    variable to set, before anything is converted."""
    missing = tmp_path / "checkpoint_8.pth"
    monkeypatch.setenv("SCORE_JAX_OFFICIAL_CHECKPOINT", str(missing))
    monkeypatch.setenv("SCORE_JAX_OFFICIAL_WORKDIR", str(tmp_path / "run"))
    with pytest.raises(CellExecutionError) as raised:
        execute(OFFICIAL, tmp_path)
    error = raised.value
    assert error.ename == "SystemExit"
    message = " ".join(error.evalue.split())
    assert f"No checkpoint at {missing}." in message
    assert "vp/cifar10_ddpmpp_continuous" in message
    assert "https://github.com/yang-song/score_sde_pytorch" in message
    assert "SCORE_JAX_OFFICIAL_CHECKPOINT" in message
    assert not (tmp_path / "run").exists()  # nothing converted or written


def test_readme_badge_opens_the_quickstart():
    """The README's Colab badge opens notebooks/quickstart.ipynb of the pyproject repository."""
    github = REPOSITORY.removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{github}/blob/main/notebooks/quickstart.ipynb"
    assert f"]({link})" in (REPO / "README.md").read_text()
