"""Orbax checkpoints: exact round trip, the keep policy, and shape mismatches named."""

import functools

import jax
import numpy as np
import pytest

from score_jax import checkpoints, parallel
from score_jax.config import load_config
from score_jax.models import get_model
from score_jax.models.mlp import example_input_shape
from score_jax.state import create_train_state
from score_jax.train.optimizer import get_optimizer

CONFIG = "configs/toy/mixture_vp.py"


@functools.cache
def make_state(nf: int, seed: int = 0):
    config = load_config(CONFIG, [f"model.nf={nf}"])
    x = np.zeros(example_input_shape(config), np.float32)
    optimizer = get_optimizer(config)

    @jax.jit  # one compiled program instead of hundreds of eager ops on a busy machine
    def build(key):
        params = get_model(config).init(key, x, np.ones(1), train=False)["params"]
        state = create_train_state(params, optimizer, jax.random.fold_in(key, 1))
        # Non-trivial optimizer moments and EMA, so a mix-up of items would show.
        grads = jax.tree.map(lambda p: p + 1.0, params)
        _, opt_state = optimizer.update(grads, state.opt_state, params)
        ema = jax.tree.map(lambda p: p * 0.5, params)
        return state.replace(step=state.step + 7, opt_state=opt_state, ema_params=ema)

    return build(jax.random.PRNGKey(seed))


def test_state_round_trip_is_exact(tmp_path):
    mesh = parallel.make_mesh()
    state = parallel.replicate(make_state(16), mesh)
    manager = checkpoints.make_manager(tmp_path, snapshot_freq=100)
    checkpoints.save_state(manager, state)
    manager.wait_until_finished()
    target = parallel.replicate(make_state(16, seed=5), mesh)
    restored = checkpoints.restore_state(manager, target, parallel.replicated(mesh))
    manager.close()
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding.is_equivalent_to(parallel.replicated(mesh), a.ndim)
    assert checkpoints.list_steps(tmp_path) == [7]


def test_keeps_latest_and_every_snapshot_freq(tmp_path):
    state = make_state(16)
    manager = checkpoints.make_manager(tmp_path, snapshot_freq=10, keep=2)
    for step in (5, 10, 15, 20, 25, 30, 35):
        checkpoints.save_state(manager, state.replace(step=np.int32(step)))
    manager.wait_until_finished()
    manager.close()
    assert checkpoints.list_steps(tmp_path) == [10, 20, 30, 35]
    assert checkpoints.list_steps(tmp_path / "nothing_here") == []


def test_shape_mismatch_names_the_parameters(tmp_path):
    manager = checkpoints.make_manager(tmp_path)
    checkpoints.save_state(manager, make_state(16))
    manager.wait_until_finished()
    target = make_state(32)
    with pytest.raises(ValueError) as err:
        checkpoints.restore_state(
            manager, target, jax.sharding.SingleDeviceSharding(jax.devices()[0])
        )
    manager.close()
    message = str(err.value)
    assert "Dense_2/kernel: checkpoint (2, 16), the config's model (2, 32)" in message
    assert "step 7" in message and "fresh --workdir" in message


def test_parameters_only_checkpoint_cannot_resume(tmp_path):
    state = make_state(16)
    checkpoints.save_inference_checkpoint(tmp_path, 3, state.params)
    assert checkpoints.list_steps(tmp_path) == [3]
    with (
        checkpoints.make_manager(tmp_path) as manager,
        pytest.raises(ValueError, match="parameters only"),
    ):
        checkpoints.restore_state(
            manager, state, jax.sharding.SingleDeviceSharding(jax.devices()[0])
        )


def _three_checkpoints(workdir):
    """Steps 2, 4, 6 of distinct states (the step field tells them apart)."""
    manager = checkpoints.make_manager(workdir, keep=5)
    for step in (2, 4, 6):
        checkpoints.save_state(manager, make_state(16).replace(step=np.int32(step)))
    manager.wait_until_finished()
    return manager


def _truncate(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:10])


def test_unreadable_latest_checkpoint_is_named_and_fallback_is_explicit(tmp_path):
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    manager = _three_checkpoints(tmp_path)
    _truncate(tmp_path / "checkpoints" / "6" / "params")
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.restore_state(manager, make_state(16), single)
    message = str(err.value)
    assert "\n" not in message and "Checkpoint step 6" in message and "[2, 4]" in message
    assert "restore_fallback=True" in message
    assert checkpoints.list_steps(tmp_path) == [2, 4, 6]  # nothing moved without being told
    restored = checkpoints.restore_state(manager, make_state(16), single, fallback=True)
    assert int(restored.step) == 4
    manager.close()
    assert checkpoints.list_steps(tmp_path) == [2, 4]
    (moved,) = (tmp_path / checkpoints.UNREADABLE).iterdir()
    assert moved.name.startswith("6.") and (moved / "params").is_dir()  # kept, not deleted


def test_incomplete_checkpoint_is_not_mistaken_for_converted_weights(tmp_path):
    import shutil

    manager = _three_checkpoints(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "6" / "opt_state")
    manager.reload()
    with pytest.raises(checkpoints.CheckpointError, match="incomplete: opt_state missing"):
        checkpoints.restore_state(
            manager, make_state(16), jax.sharding.SingleDeviceSharding(jax.devices()[0])
        )
    manager.close()


def test_inference_from_an_unreadable_checkpoint_names_the_older_ones(tmp_path):
    _three_checkpoints(tmp_path).close()
    _truncate(tmp_path / "checkpoints" / "6" / "ema_params")
    config = load_config(CONFIG, ["model.nf=16"])
    with pytest.raises(checkpoints.CheckpointError, match=r"step 6 .* Older checkpoints: \[2, 4\]"):
        checkpoints.restore_for_inference(tmp_path, config)
    assert checkpoints.restore_for_inference(tmp_path, config, step=4)[0] == 4
