"""models.conv: lax's convolution values and gradients, with a backward pass XLA:CPU keeps fast."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from score_jax.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, strides, padding, out_dtype=None, dilation=(1, 1)):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=NHWC,
        preferred_element_type=out_dtype,
    )


@pytest.mark.parametrize(
    "size, kernel, strides, padding, dilation",
    [
        (8, 3, (1, 1), ((1, 1), (1, 1)), (1, 1)),  # conv3x3
        (8, 3, (2, 2), ((0, 1), (0, 1)), (1, 1)),  # official stride-2 downsampling conv
        (9, 3, (2, 2), "VALID", (1, 1)),  # FIR conv_downsample_2d (odd size: rows left over)
        (8, 3, (1, 1), ((2, 2), (2, 2)), (2, 2)),  # NCSNv2's dilated convs
        (11, 3, (1, 1), "SAME", (4, 3)),  # unequal dilations, lax's SAME for the dilated span
        (11, 3, (2, 3), ((1, 2), (3, 0)), (2, 1)),  # stride, dilation and skewed padding at once
    ],
)
def test_values_and_gradients_equal_lax(size, kernel, strides, padding, dilation):
    kx, kw, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, size, size, 5))
    w = jax.random.normal(kw, (kernel, kernel, 5, 6))

    @jax.jit
    def values_and_grads(x, w):
        def both(fn):
            out, vjp = jax.vjp(lambda a, b: fn(a, b, strides, padding, None, dilation), x, w)
            return (out, *vjp(jax.random.normal(kc, out.shape)))

        return both(conv.conv2d), both(lax_conv)

    ours, ref = values_and_grads(x, w)
    # The same sums of products in float32: agreement to rounding (values of order 10).
    for got, want in zip(ours, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_bfloat16_operands_give_float32_output_and_gradients_of_operand_types():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 4)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 4, 3)).astype(jnp.bfloat16)
    pad = ((1, 1), (1, 1))
    out = conv.conv2d(x, w, (1, 1), pad, jnp.float32)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, lax_conv(x, w, (1, 1), pad, jnp.float32), rtol=1e-6)
    dx, dw = jax.grad(lambda a, b: jnp.sum(conv.conv2d(a, b, (1, 1), pad, jnp.float32)), (0, 1))(
        x, w
    )
    assert (dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16)


def test_conv_module_with_kernel_dilation_takes_the_custom_gradient():
    """conv.Conv(kernel_dilation=2), as in NCSNv2, goes through conv2d with lax's values."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(7), (2, 9, 9, 3))
    ours = conv.Conv(4, (3, 3), kernel_dilation=(2, 2), kernels="cpu")
    ref = nn.Conv(4, (3, 3), kernel_dilation=2)
    params = ref.init(jax.random.PRNGKey(8), x)
    jaxpr = str(jax.make_jaxpr(lambda p: ours.apply(p, x))(params))
    assert "custom_vjp_call" in jaxpr
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    # With the plain kernels the module is lax's convolution, gradient included.
    plain = conv.Conv(4, (3, 3), kernel_dilation=(2, 2), kernels="xla")
    assert "custom_vjp_call" not in str(jax.make_jaxpr(lambda p: plain.apply(p, x))(params))


def test_gradient_inside_a_loop_has_only_canonical_convolutions():
    """The point of the module: in a scanned training step every convolution XLA:CPU compiles
    (forward, input and kernel gradients) has the canonical NHWC labels its fast path needs;
    lax's own kernel gradient (f01b_i01o->01bf) would be left to the slow loop emitter."""
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 8, 8, 4))
    w = jax.random.normal(jax.random.PRNGKey(6), (3, 3, 4, 4))

    def loss(w, x):
        h = jnp.tanh(conv.conv2d(x, w, (1, 1), "SAME"))
        return jnp.sum(conv.conv2d(h, w, (1, 1), "SAME", dilation=(2, 2)) ** 2)  # and dilated

    def scanned(w, x):
        return lax.scan(lambda c, _: (c, jax.grad(loss, (0, 1))(w, x)), 0.0, None, length=2)[1]

    hlo = jax.jit(scanned).lower(w, x).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([\w>-]+)", hlo)
    assert len(labels) >= 6  # forward, input gradient, kernel gradient of both
    assert set(labels) == {"b01f_01io->b01f"}, labels
