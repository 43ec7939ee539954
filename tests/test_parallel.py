"""Data parallelism: the mesh helpers, and K steps on 4 devices equal K steps on 1 device."""

import jax
import numpy as np
import pytest

from score_jax import parallel
from score_jax.config import load_config
from score_jax.models import get_model
from score_jax.objective import make_eval_step, make_loss_fn
from score_jax.sde import get_sde
from score_jax.state import create_train_state
from score_jax.toy import GaussianMixture
from score_jax.train.optimizer import get_optimizer
from score_jax.train.step import make_train_step

CONFIG = "configs/toy/mixture_vp.py"


def tiny_config(**overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(CONFIG, ["model.nf=32", "optim.warmup=2", "optim.lr=0.01", *items])


def mixture_batches(n_calls, n_steps, batch, seed=0):
    gm = GaussianMixture(np.array([[-2.0, 0.0], [2.0, 0.0]]), np.array([0.5, 0.5]), np.ones(2) / 2)
    points = np.asarray(gm.sample(jax.random.PRNGKey(seed), n_calls * n_steps * batch))
    return points.reshape(n_calls, n_steps, batch, 2).astype(np.float32)


def run_steps(config, mesh, batches, unroll=False):
    model = get_model(config)
    sde = get_sde(config)
    optimizer = get_optimizer(config)
    params = model.init(jax.random.PRNGKey(1), batches[0, 0, :1], np.ones(1), train=False)["params"]
    state = parallel.replicate(create_train_state(params, optimizer, jax.random.PRNGKey(2)), mesh)
    loss_fn = make_loss_fn(config, sde, model.apply, True)
    step = make_train_step(config, loss_fn, optimizer, mesh, unroll=unroll)
    losses, norms = [], []
    for images in batches:
        state, (loss, norm) = step(state, parallel.host_batch_to_global(images, mesh, 1))
        losses.append(np.asarray(loss.addressable_data(0)))
        norms.append(np.asarray(norm.addressable_data(0)))
    return parallel.fetch_to_host(state), np.concatenate(losses), np.concatenate(norms)


def test_mesh_spans_all_devices_and_shards_the_batch():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count() == 4
    local = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    x = parallel.host_batch_to_global(local, mesh)
    assert x.shape == (8, 3)
    # Each device holds 2 consecutive rows, in device order.
    for shard in x.addressable_shards:
        rows = shard.index[0]
        np.testing.assert_array_equal(np.asarray(shard.data), local[rows])
        assert shard.data.shape == (2, 3)
    with pytest.raises(ValueError, match="training.batch_size=6 must be divisible"):
        parallel.local_batch_size(6, mesh)


def test_four_devices_equal_one_device():
    """6 Adam steps (3 calls x 2 scanned steps), global batch 16, on 4 devices vs 1."""
    config = tiny_config(**{"training.n_jitted_steps": 2})
    batches = mixture_batches(3, 2, 16)
    state4, losses4, norms4 = run_steps(config, parallel.make_mesh(), batches)
    state1, losses1, norms1 = run_steps(config, parallel.make_mesh(jax.devices()[:1]), batches)
    assert int(state4.step) == int(state1.step) == 6
    # Only the summation order of the batch mean differs (float32 roundoff ~1e-7 relative);
    # Adam can amplify it where a gradient entry is near 0 (measured max 4.5e-7 here); atol
    # 5e-5 is 0.5% of one step of lr 0.01, while a wrong shard or pmean moves entries ~1e-3.
    np.testing.assert_allclose(losses4, losses1, rtol=1e-5)
    # Adam hides a constant gradient scale, so check the (pre-clipping) gradient norms too:
    # a gradient summed instead of averaged over devices would be 4x larger.
    np.testing.assert_allclose(norms4, norms1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state4), jax.tree.leaves(state1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5)
    # The run moved the parameters (so equality is not vacuous).
    assert not np.allclose(
        state4.params["Dense_0"]["kernel"], state4.ema_params["Dense_0"]["kernel"]
    )


def eval_losses_on_all_and_one_device(config, images: np.ndarray, to_global) -> list[float]:
    """The eval step's loss on `images` over every device and over one device;
    to_global(images, mesh) places the host batch."""
    model, sde = get_model(config), get_sde(config)
    params = model.init(jax.random.PRNGKey(1), images[:1], np.ones(1), train=False)["params"]
    loss_fn = make_loss_fn(config, sde, model.apply, False)
    values = []
    for mesh in (parallel.make_mesh(), parallel.make_mesh(jax.devices()[:1])):
        step = make_eval_step(config, loss_fn, mesh)
        x = to_global(images, mesh)
        values.append(float(step(parallel.replicate(params, mesh), x, jax.random.PRNGKey(0))))
    return values


def test_eval_step_is_device_count_independent():
    images = mixture_batches(1, 1, 16)[0, 0]
    values = eval_losses_on_all_and_one_device(tiny_config(), images, parallel.host_batch_to_global)
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6)
    assert np.isfinite(values[0]) and values[0] > 0


def test_scan_and_unrolled_steps_agree():
    """lax.scan (the default) and the unrolled loop compute the same steps."""
    config = tiny_config(**{"training.n_jitted_steps": 3})
    batches = mixture_batches(1, 3, 8, seed=3)
    mesh = parallel.make_mesh(jax.devices()[:1])
    scanned, losses_scan, _ = run_steps(config, mesh, batches, unroll=False)
    unrolled, losses_unrolled, _ = run_steps(config, mesh, batches, unroll=True)
    # Same operations; XLA may fuse them differently, so allow float32 roundoff.
    np.testing.assert_allclose(losses_scan, losses_unrolled, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_three_devices_pad_a_batch_they_cannot_split_and_equal_one_device():
    """Batch 16 on 3 devices: padded to 18 rows weighted 0; the same steps as on 1 device."""
    config = tiny_config(**{"training.n_jitted_steps": 2, "training.batch_size": 16})
    batches = mixture_batches(3, 2, 16)
    mesh3, mesh1 = parallel.make_mesh(jax.devices()[:3]), parallel.make_mesh(jax.devices()[:1])
    assert parallel.padded_batch_size(16, mesh3) == 18
    padded = np.stack([parallel.pad_rows(b, 18, axis=1) for b in batches])
    state3, losses3, norms3 = run_steps(config, mesh3, padded)
    state1, losses1, norms1 = run_steps(config, mesh1, batches)
    # Padding rows draw their own noise after the real rows' (row-wise keys), so the real rows
    # see the noise of the 1-device run; only the summation order differs (as 4 vs 1 above).
    np.testing.assert_allclose(losses3, losses1, rtol=1e-5)
    np.testing.assert_allclose(norms3, norms1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state3), jax.tree.leaves(state1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5)


def test_eval_step_pads_a_batch_it_cannot_split():
    images = mixture_batches(1, 1, 15)[0, 0]
    values = eval_losses_on_all_and_one_device(
        tiny_config(**{"eval.batch_size": 15}),
        images,
        lambda images, mesh: parallel.padded_batch_to_global(images, mesh, 15),
    )
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6)
