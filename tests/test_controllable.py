"""Inpainting, colorization and class-conditional sampling against closed-form ground truth.

Data are Gaussians with full covariance (`toy.Gaussian`), whose conditionals are Gaussian in
closed form, and an isotropic mixture whose components are the classes (`toy.GaussianMixture`),
whose noise-conditional class posterior p_t(y | x) is exact. Samples are whitened with the
exact conditional, w = lam^-1/2 V^T (x - m), so every check has a known sampling error:
mean(w_i) has standard error 1/sqrt(n), std(w_i) about 1/sqrt(2n), corr(w_i, w_j) about
1/sqrt(n). Checks allow Z standard errors (Z = 4.5: tens of statistics, a false alarm rate
below 1e-3 in all) plus a small sampler bias where stated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import controllable, toy
from score_jax.sampling import pc_sample
from score_jax.sde import VESDE, VPSDE

Z = 4.5
# VE with sigma_max = 10 covers data of scale ~1; 500 levels keep the tests short.
SDE = VESDE(sigma_min=0.01, sigma_max=10.0, N=250)
# A gentle Langevin corrector: the replacement method needs mixing at low noise (the predictor
# alone leaves the unknown part ~0.1 std off), and a small snr keeps the unadjusted Langevin
# variance bias ~ snr^2 / 2 below 0.5%.
PC = dict(predictor="reverse_diffusion", corrector="langevin", snr=0.08, n_steps=2, eps=1e-5)


def random_gaussian(dim: int, seed: int) -> toy.Gaussian:
    """N(m, Q diag(lam) Q^T) with a random rotation Q and eigenvalues from 0.2 to 1.5."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    lam = np.linspace(0.2, 1.5, dim)
    return toy.Gaussian(rng.normal(size=dim) * 0.5, (q * lam) @ q.T)


def assert_gaussian(samples: np.ndarray, target: toy.Gaussian, bias: float = 0.0) -> None:
    """Whitened samples have zero mean, unit stds and no correlations within Z errors."""
    samples = np.asarray(samples, np.float64)
    n = len(samples)
    lam, vecs = np.linalg.eigh(np.asarray(target.cov, np.float64))
    w = (samples - np.asarray(target.mean, np.float64)) @ vecs / np.sqrt(lam)
    np.testing.assert_array_less(np.abs(w.mean(0)), Z / np.sqrt(n))
    np.testing.assert_array_less(np.abs(w.std(0) - 1.0), Z / np.sqrt(2 * n) + bias)
    corr = np.corrcoef(w.T)[np.triu_indices(w.shape[1], 1)]
    np.testing.assert_array_less(np.abs(corr), Z / np.sqrt(n))


def test_inpainting_matches_closed_form_conditional():
    """Three masks of a 2x2x2 image at once: unknown pixels ~ p(x_u | x_k), known ones exact."""
    gauss = random_gaussian(8, seed=0)
    masks = np.array(
        [[1, 0, 1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]], bool
    )
    y = np.asarray(gauss.sample(jax.random.PRNGKey(1), 1))[0]
    n = 2000
    image = jnp.broadcast_to(jnp.asarray(y, jnp.float32).reshape(1, 2, 2, 2), (3 * n, 2, 2, 2))
    mask = jnp.asarray(np.repeat(masks, n, axis=0), jnp.float32).reshape(3 * n, 2, 2, 2)
    run = jax.jit(
        lambda key, image, mask: controllable.inpaint(
            key, gauss.score_fn(SDE), SDE, image, mask, **PC
        )
    )
    x = np.asarray(run(jax.random.PRNGKey(2), image, mask)).reshape(3, n, 8)
    for i, known in enumerate(masks):
        np.testing.assert_array_equal(x[i][:, known], np.broadcast_to(y[known], (n, known.sum())))
        assert_gaussian(x[i][:, ~known], gauss.conditional(known, y), bias=0.01)


def test_inpainting_denoises_the_unknown_part():
    """With the known block independent of the unknown one, replacement is exact and the
    denoised output is Tweedie's E[x_u | x_u + sigma z] of an exact draw: covariance
    S (S + sigma^2)^-1 S. The official bug returns the noisy state there (covariance larger by
    about sigma^2); a large sigma_min makes the difference plain."""
    sde = VESDE(sigma_min=0.5, sigma_max=10.0, N=500)
    unknown = random_gaussian(4, seed=3)
    cov = np.zeros((8, 8))
    cov[:4, :4] = unknown.cov
    cov[4:, 4:] = np.eye(4) * 0.5
    gauss = toy.Gaussian(np.concatenate([unknown.mean, np.zeros(4)]), cov)
    n = 4000
    known = np.arange(8) >= 4  # the second row of pixels, observed as 1
    image = jnp.broadcast_to(jnp.asarray(known, jnp.float32).reshape(1, 2, 2, 2), (n, 2, 2, 2))
    mask = jnp.asarray(known, jnp.float32).reshape(2, 2, 2)
    x = controllable.inpaint(jax.random.PRNGKey(4), gauss.score_fn(sde), sde, image, mask, **PC)
    s = np.asarray(unknown.cov)
    sigma2 = float(sde.sigma(jnp.asarray(1e-5))) ** 2
    tweedie = s @ np.linalg.solve(s + sigma2 * np.eye(4), s)
    x = np.asarray(x).reshape(n, 8)
    np.testing.assert_allclose(x[:, 4:], 1.0)
    assert_gaussian(x[:, :4], toy.Gaussian(unknown.mean, tweedie), bias=0.01)


def latent_map(num_pixels: int) -> np.ndarray:
    """The matrix of x -> x @ GRAY_BASIS per pixel on flattened [pixels * 3] vectors."""
    return np.kron(np.eye(num_pixels), controllable.GRAY_BASIS.T.astype(np.float64))


def test_colorization_matches_closed_form_conditional():
    """A 2x2 RGB Gaussian: samples keep the gray image and their colour ~ p(colour | gray)."""
    gauss = random_gaussian(12, seed=5)
    rgb = np.asarray(gauss.sample(jax.random.PRNGKey(6), 1))[0].reshape(1, 2, 2, 3)
    gray = rgb.mean(-1, keepdims=True)
    n = 4000
    gray_batch = jnp.broadcast_to(jnp.asarray(gray, jnp.float32), (n, 2, 2, 1))
    x = controllable.colorize(jax.random.PRNGKey(7), gauss.score_fn(SDE), SDE, gray_batch, **PC)
    x = np.asarray(x, np.float64)
    np.testing.assert_allclose(
        x.mean(-1, keepdims=True), np.broadcast_to(gray, x.shape[:-1] + (1,)), atol=1e-5
    )
    latent = gauss.linear(latent_map(4))
    known = np.tile([True, False, False], 4)
    target = latent.conditional(known, latent_map(4) @ rgb.reshape(-1))
    z = x.reshape(n, 12) @ latent_map(4).T
    assert_gaussian(z[:, ~known], target, bias=0.01)


def test_class_conditional_sampling_draws_the_chosen_component():
    """Classes = components of a 3-component mixture in 4 dimensions: at scale 1 the exact
    p_t(y | x) turns the mixture score into the chosen component's score."""
    means = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0], [0.0, 2.0, 2.0, -1.0]])
    gm = toy.GaussianMixture(means, np.array([0.5, 0.4, 0.6]), np.array([0.6, 0.3, 0.1]))
    sde = VPSDE(N=500)
    n, label = 4000, 2  # the least likely class: unconditional samples hit it 10% of the time
    log_lik = controllable.class_log_likelihood(
        toy.mixture_class_logits_fn(gm, sde), jnp.full((n,), label)
    )
    score_fn = controllable.conditional_score_fn(gm.score_fn(sde), log_lik, scale=1.0)
    x, _ = pc_sample(
        jax.random.PRNGKey(8), score_fn, sde, (n, 2, 2, 1), "reverse_diffusion", "none"
    )
    x = np.asarray(x, np.float64).reshape(n, 4)
    comp = np.asarray(jnp.argmax(gm.component_log_probs(jnp.asarray(x)), axis=-1))
    assert np.mean(comp == label) > 0.99
    std = float(gm.stds[label])
    assert_gaussian(x, toy.Gaussian(means[label], std**2 * np.eye(4)), bias=0.01)


def test_bad_inputs_are_refused():
    score_fn = random_gaussian(8, 0).score_fn(SDE)
    image = jnp.zeros((2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 2, 1\)"):
        controllable.inpaint(jax.random.PRNGKey(0), score_fn, SDE, image, jnp.ones((3, 2, 1)))
    with pytest.raises(ValueError, match=r"gray image \[B, H, W, 1\]"):
        controllable.colorize(jax.random.PRNGKey(0), score_fn, SDE, jnp.zeros((2, 2, 2, 3)))


def test_toy_ground_truth_scores_and_class_posteriors():
    """Gaussian.score_fn is the gradient of the perturbed density N(a m, a^2 S + std^2 I), and
    mixture_class_logits_fn is Bayes' rule on the perturbed mixture's components."""
    gauss = random_gaussian(4, seed=9)
    sde = VPSDE()
    t = jnp.asarray([0.05, 0.5])
    x = jax.random.normal(jax.random.PRNGKey(10), (2, 4))
    for b in range(2):
        mean, std = sde.marginal_prob(jnp.ones((1, 1)), t[b : b + 1])
        a, std = float(mean[0, 0]), float(std[0])
        cov = a**2 * gauss.cov + std**2 * jnp.eye(4)
        grad = jax.grad(jax.scipy.stats.multivariate_normal.logpdf)(x[b], a * gauss.mean, cov)
        np.testing.assert_allclose(gauss.score_fn(sde)(x, t)[b], grad, rtol=1e-4, atol=1e-5)
    gm = toy.GaussianMixture(np.eye(3, 4) * 2.0, np.array([0.5, 0.7, 1.0]), np.array([1, 2, 3]))
    logits = toy.mixture_class_logits_fn(gm, sde)(x, t)
    for b in range(2):
        joint = gm.perturbed(sde, float(t[b])).component_log_probs(x[b : b + 1])[0]
        np.testing.assert_allclose(logits[b], jax.nn.log_softmax(joint), rtol=1e-5, atol=1e-5)


def test_linear_inverse_problem_samples_the_exact_posterior():
    """y = A x + n, n ~ N(0, s^2 I), x ~ N(m, S): with the exact log p_t(y | x_t) (Gaussian:
    y | x_t ~ N(A mu_t, A C_t A^T + s^2 I), (mu_t, C_t) the law of x_0 given x_t) the
    conditional score samples N(m_post, S_post) = the closed-form posterior."""
    gauss = random_gaussian(4, seed=11)
    a_mat = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.5, -1.0, 0.3]])
    s2 = 0.1
    y = a_mat @ np.asarray(gauss.sample(jax.random.PRNGKey(12), 1))[0]
    lam, vecs = np.linalg.eigh(np.asarray(gauss.cov))

    def log_likelihood_fn(x, t):  # x [B, 2, 2, 1], t [B] -> [B]
        std = SDE.marginal_prob(x, t)[1]  # VE: x_t = x_0 + std z
        c_eig = 1.0 / (1.0 / lam + 1.0 / std[:, None] ** 2)  # [B, 4]: C_t in the S basis
        prior = vecs @ (vecs.T @ np.asarray(gauss.mean) / lam)
        flat = x.reshape(x.shape[0], 4)
        mu = ((prior + flat / std[:, None] ** 2) @ vecs * c_eig) @ vecs.T
        a_vecs = jnp.asarray(a_mat @ vecs)
        cov = jnp.einsum("ik,bk,jk->bij", a_vecs, c_eig, a_vecs) + s2 * jnp.eye(2)
        resid = jnp.asarray(y) - mu @ a_mat.T
        return -0.5 * jnp.einsum("bi,bi->b", resid, jnp.linalg.solve(cov, resid[..., None])[..., 0])

    posterior_cov = np.linalg.inv(np.linalg.inv(gauss.cov) + a_mat.T @ a_mat / s2)
    posterior_mean = posterior_cov @ (np.linalg.solve(gauss.cov, gauss.mean) + a_mat.T @ y / s2)
    score_fn = controllable.conditional_score_fn(gauss.score_fn(SDE), log_likelihood_fn)
    n = 4000
    x, _ = pc_sample(
        jax.random.PRNGKey(13), score_fn, SDE, (n, 2, 2, 1), "reverse_diffusion", "none", eps=1e-5
    )
    assert_gaussian(np.asarray(x).reshape(n, 4), toy.Gaussian(posterior_mean, posterior_cov), 0.01)
