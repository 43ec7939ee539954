"""The noise-conditional classifier: its network, and its training run's data, resume and
checkpoints (the score model's machinery)."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from score_jax import checkpoints
from score_jax.config import load_config
from score_jax.models.classifier import get_classifier
from score_jax.sde import VPSDE
from score_jax.train.classifier import perturb, restore_classifier, train_classifier

CONFIG = str(REPO / "configs" / "digits" / "classifier.py")
# A narrow network and tiny batches (4 test devices): one compile of a few seconds.
SMALL = [
    "--config.classifier.embedding_size=8",
    "--config.training.batch_size=8",
    "--config.eval.batch_size=100",
    "--config.training.log_freq=1",
    "--config.training.eval_freq=1000",
    "--config.optim.warmup=0",
]


def small_config(n_iters: int, every: int = 1000):
    extra = [f"--config.training.n_iters={n_iters}", f"--config.training.snapshot_freq={every}"]
    extra.append(f"--config.training.snapshot_freq_for_preemption={every}")
    return load_config(CONFIG, SMALL + extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4: (workdir, config, params, EMA params)."""
    workdir = tmp_path_factory.mktemp("classifier")
    config = small_config(4, every=2)
    state = train_classifier(config, workdir)
    return workdir, config, *jax.tree.map(np.asarray, (state.params, state.ema_params))


def test_logits_depend_on_noise_and_only_on_their_own_example(trained):
    """Per-example independence is what conditional_score_fn's gradient of a batch sum needs
    (no batch statistics); the noise level must reach the output."""
    _, config, params, _ = trained
    model = get_classifier(config)
    variables = {"params": params}
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
    std = jnp.array([0.01, 0.5, 1.0])
    jac = jax.jit(jax.grad(lambda x: model.apply(variables, x, std)[0, 4]))(x)
    assert float(jnp.abs(jac[0]).sum()) > 0
    np.testing.assert_array_equal(jac[1:], 0.0)
    logits = jax.jit(model.apply)(variables, x[:1].repeat(2, 0), jnp.array([0.01, 1.0]))
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-4


def test_perturb_draws_the_forward_marginal():
    """x_t | x_0 ~ N(a(t) x_0, std(t)^2): standardised residuals have mean 0 and std 1."""
    sde = VPSDE()
    x0 = jnp.full((20000, 2), 3.0)
    x, std = perturb(sde, jax.random.PRNGKey(2), x0, 1e-5)
    mean_coeff = jnp.sqrt(1.0 - std**2)  # VP: a(t)^2 + std(t)^2 = 1
    z = (x - mean_coeff[:, None] * x0) / std[:, None]
    np.testing.assert_allclose(z.mean(), 0.0, atol=4.5 / np.sqrt(z.size))
    np.testing.assert_allclose(z.std(), 1.0, atol=4.5 / np.sqrt(2 * z.size))
    assert float(std.min()) < 0.1 and float(std.max()) > 0.9  # t spans (eps, T)


# Slow: a second training run (~25 s on 2 cores). The default run trains once (the fixture, used
# by the network test) and test_train_loop covers checkpoints.restore_state for score models.
@pytest.mark.slow
def test_training_resumes_exactly_and_restores_for_inference(trained, tmp_path):
    """4 steps in one go equal a restart from the step-2 checkpoint and 2 more steps (same
    data batches, noise and optimizer state); inference restores the final EMA."""
    workdir, config, params, ema_params = trained
    assert checkpoints.list_steps(workdir) == [2, 4]
    step, ema = restore_classifier(workdir, config)
    assert step == 4
    for a, b in zip(jax.tree.leaves(ema_params), jax.tree.leaves(ema), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    shutil.copytree(checkpoints.checkpoint_dir(workdir) / "2", tmp_path / "checkpoints" / "2")
    resumed = train_classifier(config, tmp_path)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_restore_names_missing_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        restore_classifier(tmp_path, small_config(1))
