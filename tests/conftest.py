"""Test set-up: four CPU devices for the data-parallel tests, and the reference fixtures."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference beside the checkout (CI always has it)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE}")
    return REFERENCE


def load_reference(name: str) -> dict[str, np.ndarray]:
    """All arrays of ../shared/reference/<name>.npz, skipping the test if it is absent."""
    path = REFERENCE / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"reference fixture not found: {path}")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
