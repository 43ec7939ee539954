"""The training losses are minimised by the exact score (Monte-Carlo, fixed keys)."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses
from score_jax.sde import VESDE, VPSDE, SubVPSDE
from score_jax.toy import GaussianMixture

N_DATA = 4096
GM = GaussianMixture(jnp.array([[1.0, 1.0], [-1.0, -0.5]]), jnp.array([0.3, 0.5]), jnp.ones(2))
BATCH = {"image": GM.sample(jax.random.PRNGKey(0), N_DATA)}
SDES = {"ve": VESDE(0.01, 50.0), "vp": VPSDE(0.1, 20.0), "subvp": SubVPSDE(0.1, 20.0)}


def continuous_apply(sde, distortion=1.0):
    """A 'network' whose output converts to (1 + c) * distortion * exact score, c = params['c']."""
    exact = GM.score_fn(sde)

    def apply(variables, x, labels, train=False, rngs=None):
        c = variables["params"]["c"]
        if isinstance(sde, VESDE):
            t = jnp.log(labels / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
            return (1 + c) * distortion * exact(x, t)
        t = labels / 999
        std = sde.marginal_prob(x, t)[1]
        return -(1 + c) * distortion * std[:, None] * exact(x, t)

    return apply


def discrete_apply(sde, distortion=1.0):
    """The same for the discrete losses, whose labels index the SMLD / DDPM noise levels."""
    if isinstance(sde, VESDE):
        sigmas_desc = jnp.asarray(sde.discrete_sigmas[::-1].copy())
        levels = SimpleNamespace(marginal_prob=lambda x, i: (x, sigmas_desc[i.astype(jnp.int32)]))
    else:
        sqrt_abar = jnp.asarray(sde.sqrt_alphas_cumprod)
        sqrt_1m = jnp.asarray(sde.sqrt_1m_alphas_cumprod)
        levels = SimpleNamespace(
            marginal_prob=lambda x, i: (
                x * sqrt_abar[i.astype(jnp.int32)][:, None],
                sqrt_1m[i.astype(jnp.int32)],
            )
        )
    exact = GM.score_fn(levels)

    def apply(variables, x, labels, train=False, rngs=None):
        score = (1 + variables["params"]["c"]) * distortion * exact(x, labels)
        if isinstance(sde, VESDE):
            return score
        return -levels.marginal_prob(x, labels)[1][:, None] * score

    return apply


def _gradient_z_score(loss_fn):
    """Mean per-example d loss / dc at c=0 in units of its standard error."""
    key = jax.random.PRNGKey(42)

    def per_example(c):
        return loss_fn({"c": c}, key, BATCH)[1]["per_example"]

    grads = jax.jacfwd(per_example)(0.0)
    return float(jnp.mean(grads) / (jnp.std(grads) / math.sqrt(grads.shape[0])))


def _losses_around_minimum(loss_fn, delta=0.2):
    key = jax.random.PRNGKey(42)
    return [float(loss_fn({"c": c}, key, BATCH)[0]) for c in (-delta, 0.0, delta)]


CASES = [("dsm", name, weighting) for name in sorted(SDES) for weighting in (False, True)] + [
    ("smld", "ve", False),
    ("ddpm", "vp", False),
]


def _build(kind, name, weighting, distortion=1.0):
    sde = SDES[name]
    if kind == "dsm":
        apply = continuous_apply(sde, distortion)
        return losses.sde_loss_fn(sde, apply, likelihood_weighting=weighting)
    apply = discrete_apply(sde, distortion)
    builder = losses.smld_loss_fn if kind == "smld" else losses.ddpm_loss_fn
    return builder(sde, apply)


@pytest.mark.parametrize("kind, name, weighting", CASES)
def test_exact_score_minimises_the_loss(kind, name, weighting):
    loss_fn = jax.jit(_build(kind, name, weighting))
    # The per-example gradient at the exact score has mean zero: |z| < 4 at a fixed key.
    assert abs(_gradient_z_score(loss_fn)) < 4.0
    below, at, above = _losses_around_minimum(loss_fn)
    assert below > at and above > at


@pytest.mark.parametrize("kind, name, weighting", CASES)
def test_a_wrong_score_is_detected(kind, name, weighting):
    # A 20% too large score: the gradient points clearly back towards the exact one.
    loss_fn = jax.jit(_build(kind, name, weighting, distortion=1.2))
    assert _gradient_z_score(loss_fn) > 8.0


@pytest.mark.parametrize("name", sorted(SDES))
def test_likelihood_weighting_is_g2_over_std2(name):
    sde = SDES[name]
    apply = continuous_apply(sde, distortion=1.1)
    plain_loss = losses.sde_loss_fn(sde, apply)
    noise = plain_loss.draw_noise(jax.random.PRNGKey(3), BATCH["image"])
    batch = {**BATCH, "noise": noise}  # the same t and z for both losses
    plain = plain_loss({"c": 0.0}, jax.random.PRNGKey(4), batch)[1]["per_example"]
    weighted = losses.sde_loss_fn(sde, apply, likelihood_weighting=True)(
        {"c": 0.0}, jax.random.PRNGKey(5), batch
    )[1]["per_example"]
    g2 = sde.sde(BATCH["image"], noise["t"])[1] ** 2
    std = sde.marginal_prob(BATCH["image"], noise["t"])[1]
    np.testing.assert_allclose(weighted, plain * g2 / std**2, rtol=2e-4)


@pytest.mark.parametrize("kind, name", [("dsm", "vp"), ("smld", "ve"), ("ddpm", "vp")])
def test_given_noise_replaces_the_draw(kind, name):
    """A loss evaluated on pre-drawn noise equals the loss that draws the same noise itself."""
    loss_fn = _build(kind, name, False, distortion=1.1)
    key = jax.random.PRNGKey(6)
    noise = loss_fn.draw_noise(jax.random.split(key)[0], BATCH["image"])
    own = loss_fn({"c": 0.0}, key, BATCH)[0]
    given = loss_fn({"c": 0.0}, jax.random.PRNGKey(99), {**BATCH, "noise": noise})[0]
    np.testing.assert_allclose(given, own, rtol=1e-6)
    # Row b of the noise belongs to example b: a half batch gets the first half's losses.
    half = {"image": BATCH["image"][:8], "noise": jax.tree.map(lambda a: a[:8], noise)}
    per_example = loss_fn({"c": 0.0}, key, {**BATCH, "noise": noise})[1]["per_example"]
    np.testing.assert_allclose(
        loss_fn({"c": 0.0}, key, half)[1]["per_example"], per_example[:8], rtol=1e-5
    )


def test_reduce_mean_and_sum():
    sde, apply = SDES["vp"], continuous_apply(SDES["vp"], 1.3)
    key = jax.random.PRNGKey(5)
    mean = losses.sde_loss_fn(sde, apply, reduce_mean=True)({"c": 0.0}, key, BATCH)[0]
    half_sum = losses.sde_loss_fn(sde, apply, reduce_mean=False)({"c": 0.0}, key, BATCH)[0]
    # Two dimensions: 0.5 * sum equals the mean.
    np.testing.assert_allclose(half_sum, mean, rtol=1e-6)


def test_get_loss_fn_selects_the_official_loss():
    apply = continuous_apply(SDES["vp"])
    x0 = BATCH["image"][:4]
    key = jax.random.PRNGKey(0)
    # Continuous losses draw times t in (0, 1]; the discrete ones integer noise levels.
    continuous = losses.get_loss_fn(SDES["vp"], apply, True).draw_noise(key, x0)
    assert continuous["t"].dtype == jnp.float32 and "labels" not in continuous
    for name in ("vp", "ve"):
        discrete = losses.get_loss_fn(SDES[name], apply, True, continuous=False)
        labels = discrete.draw_noise(key, x0)["labels"]
        assert labels.dtype == jnp.int32 and int(labels.max()) < SDES[name].N
    with pytest.raises(ValueError, match="sub-VP"):
        losses.get_loss_fn(SDES["subvp"], apply, True, continuous=False)
    with pytest.raises(ValueError, match="likelihood_weighting"):
        losses.get_loss_fn(SDES["ve"], apply, True, continuous=False, likelihood_weighting=True)
