"""models.norm, models.sums and models.conv.Conv: flax's GroupNorm / Conv and plain broadcasting
adds, value for value and gradient for gradient, with backward sums computed as GEMVs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.models import conv, norm, sums


def _values_and_grads(module, x, key):
    """Output, input gradient and parameter gradients of <module(x), random cotangent>."""
    variables = module.init(jax.random.PRNGKey(0), x)
    # Perturb every parameter so scale != 1 and bias != 0 exercise their gradients.
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(key, len(leaves) + 1)
    perturbed = [
        p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys[1:], strict=True)
    ]
    variables = jax.tree.unflatten(tree, perturbed)
    out, vjp = jax.vjp(lambda v, a: module.apply(v, a), variables, x)
    cotangent = jax.random.normal(keys[0], out.shape, out.dtype)
    dvars, dx = vjp(cotangent)
    return variables, out, dx, dvars


@pytest.mark.parametrize(
    "shape, groups", [((2, 8, 8, 32), 8), ((3, 4, 6, 12), 3), ((1, 5, 5, 4), 1)]
)
def test_group_norm_equals_flax(shape, groups):
    # Inputs with a large common offset test the two-pass variance as flax computes it.
    x = 5.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(1), shape)
    ours = _values_and_grads(norm.GroupNorm(groups), x, jax.random.PRNGKey(2))
    ref_module = nn.GroupNorm(num_groups=groups, epsilon=1e-6, use_fast_variance=False)
    ref = _values_and_grads(ref_module, x, jax.random.PRNGKey(2))
    # Same parameter tree and initial values (flax's names `scale`, `bias`).
    assert jax.tree.structure(ours[0]) == jax.tree.structure(ref[0])
    # Sums of O(100) normalised terms in float32, in different orders: rounding-level agreement.
    for got, want in zip(jax.tree.leaves(ours[1:]), jax.tree.leaves(ref[1:]), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_group_norm_normalises_and_rejects_bad_shapes():
    x = 3.0 + jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 8))
    y = norm.GroupNorm(2).apply({"params": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}}, x)
    groups = np.asarray(y).reshape(2, 16, 2, 4)
    np.testing.assert_allclose(groups.mean(axis=(1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(groups.var(axis=(1, 3)), 1.0, rtol=1e-4)  # eps 1e-6 vs var 1
    with pytest.raises(ValueError, match="divisible by 3"):
        norm.GroupNorm(3).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="NHWC"):
        norm.GroupNorm(2).init(jax.random.PRNGKey(0), jnp.ones((4, 8)))


def test_sums_and_bias_adds_equal_plain_broadcasting():
    y = jax.random.normal(jax.random.PRNGKey(4), (3, 5, 7, 6))
    np.testing.assert_allclose(sums.sum_leading(y), y.sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sums.sum_pixels(y), y.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    b, v = jnp.arange(6.0), jax.random.normal(jax.random.PRNGKey(5), (3, 6))

    def grads(add, y, p):  # of a non-linear loss, so the cotangents are not constant
        return jax.grad(lambda y, p: jnp.sum(jnp.sin(add(y, p)) ** 2), argnums=(0, 1))(y, p)

    pairs = [
        (sums.add_bias, lambda y, p: y + p, b),
        (sums.add_per_example, lambda y, p: y + p[:, None, None, :], v),
    ]
    for ours, plain, p in pairs:
        np.testing.assert_array_equal(ours(y, p), plain(y, p))
        for g, w in zip(grads(ours, y, p), grads(plain, y, p), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # Cotangents keep each operand's dtype when a bfloat16 tensor meets a float32 bias.
    dy, db = jax.grad(lambda y, p: sums.add_bias(y, p).sum(), argnums=(0, 1))(
        y.astype(jnp.bfloat16), b
    )
    assert (dy.dtype, db.dtype) == (jnp.bfloat16, jnp.float32)
    np.testing.assert_array_equal(db, np.full(6, 3 * 5 * 7, np.float32))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(features=6, kernel_size=(3, 3), padding=((1, 1), (1, 1))),
        dict(features=6, kernel_size=(3, 3), strides=(2, 2), padding=((0, 1), (0, 1))),
        dict(features=4, kernel_size=(1, 1), padding="VALID"),
        dict(features=5, kernel_size=(3, 3), padding="SAME", kernel_dilation=(2, 2)),
        dict(features=5, kernel_size=(3, 3), use_bias=False),
    ],
)
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_conv_module_equals_flax_conv(kwargs, kernels):
    x = jax.random.normal(jax.random.PRNGKey(6), (2, 8, 8, 3))
    ours = _values_and_grads(conv.Conv(**kwargs, kernels=kernels), x, jax.random.PRNGKey(7))
    ref = _values_and_grads(nn.Conv(**kwargs), x, jax.random.PRNGKey(7))
    assert jax.tree.structure(ours[0]) == jax.tree.structure(ref[0])
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_module_mixed_precision_matches_flax_with_float32_results():
    x = jax.random.normal(jax.random.PRNGKey(8), (2, 6, 6, 4))
    kwargs = dict(features=3, kernel_size=(3, 3), dtype=jnp.bfloat16)
    variables = nn.Conv(**kwargs).init(jax.random.PRNGKey(0), x)
    ours = conv.Conv(**kwargs, out_dtype=jnp.float32, kernels="cpu").apply(variables, x)
    f32_out = lambda *a, **k: jax.lax.conv_general_dilated(  # noqa: E731
        *a, **k, preferred_element_type=jnp.float32
    )
    ref = nn.Conv(**kwargs, conv_general_dilated=f32_out).apply(variables, x)
    assert ours.dtype == jnp.float32
    # Same bfloat16 operands and bias, float32 accumulation: equal to float32 rounding.
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="NHWC"):
        conv.Conv(3).init(jax.random.PRNGKey(0), jnp.ones((6, 6, 4)))
