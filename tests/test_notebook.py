"""The Colab quickstart runs top to bottom and its printed numbers are right."""

import contextlib
import io
import json

from conftest import REPO


def test_quickstart_notebook_runs(monkeypatch):
    notebook = json.loads((REPO / "notebooks" / "quickstart.ipynb").read_text())
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    # The notebook's claims, checked against the exact mixture it samples from.
    fraction = float(namespace["right"].mean())
    assert abs(fraction - 0.3) < 3 * (0.3 * 0.7 / 4000) ** 0.5 + 0.01
    assert float(abs(namespace["back"] - namespace["data"]).max()) < 5e-3
    # Exact-trace ODE vs closed form: the likelihood tests hold this to 2e-3 nats for VP.
    assert float(abs(namespace["logp"] - namespace["exact"]).max()) < 2e-3
    # The network cell returns a score of the digits' image shape.
    assert "score shape: (2, 8, 8, 1)" in output.getvalue()
