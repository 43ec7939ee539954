"""Test set-up: four CPU devices for the data-parallel tests, and the reference fixtures."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import ml_collections  # noqa: E402
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


def make_data_config(
    dataset: str = "DIGITS", image_size: int = 8, channels: int = 1, **extra
) -> ml_collections.ConfigDict:
    """A config holding only the data section, as the data pipeline reads it."""
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(
        dict(
            dataset=dataset,
            image_size=image_size,
            num_channels=channels,
            random_flip=True,
            centered=False,
            uniform_dequantization=False,
            data_dir=None,
            category="",
            path="",
            holdout=0,
        )
    )
    config.data.update(extra)
    return config


_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent XLA cache for a module (and, through cache_env, the subprocesses it starts).

    Every train() call builds fresh jitted functions; with the cache, calls after the first
    load the compiled programs instead of compiling them again (halves such a module's time).
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = tmp_path_factory.getbasetemp() / "jax_cache"
    old = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    for name, value in zip(_CACHE_OPTIONS, (str(path), 0, 0), strict=True):
        jax.config.update(name, value)
    cc.reset_cache()
    yield path
    for name, value in old.items():
        jax.config.update(name, value)
    cc.reset_cache()


def cache_env(path) -> dict:
    """Environment variables that give a subprocess the same persistent compilation cache."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(path),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def initial_train_setup(config, mesh):
    """(replicated initial TrainState, compiled-on-call train step) of config's model on mesh:
    parameters from PRNGKey(0), the state's key from key(1), as score-jax's loop builds them."""
    import jax

    from score_jax import parallel
    from score_jax.models import get_model, init_model
    from score_jax.objective import make_loss_fn
    from score_jax.sde import get_sde
    from score_jax.state import create_train_state
    from score_jax.train.optimizer import get_optimizer
    from score_jax.train.step import make_train_step

    optimizer = get_optimizer(config)
    loss_fn = make_loss_fn(config, get_sde(config), get_model(config).apply, train=True)
    params = init_model(jax.random.PRNGKey(0), config)["params"]
    state = parallel.replicate(create_train_state(params, optimizer, jax.random.key(1)), mesh)
    return state, make_train_step(config, loss_fn, optimizer, mesh)
