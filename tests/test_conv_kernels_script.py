"""scripts/conv_kernels_vs_torch.py: it finds every convolution of a network, nested ones too."""

import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.models import conv

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "conv_kernels_vs_torch.py"
spec = importlib.util.spec_from_file_location("conv_kernels_vs_torch", SCRIPT)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


class ThreeConvs(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = conv.Conv(8, kernels="cpu")(x)  # custom VJP: the convolution sits in a nested jaxpr
        h = conv.Conv(8, kernels="xla")(h)
        return nn.Conv(4, (1, 1), strides=(2, 2))(h)


def test_conv_shapes_counts_each_convolution_once():
    x = jnp.zeros((2, 8, 8, 3))
    params = ThreeConvs().init(jax.random.PRNGKey(0), x)
    shapes = script.conv_shapes(lambda p: ThreeConvs().apply(p, x), params)
    same = ((1, 1), (1, 1))
    assert shapes == {
        ((2, 8, 8, 3), (3, 3, 3, 8), (1, 1), same, (1, 1)): 1,
        ((2, 8, 8, 8), (3, 3, 8, 8), (1, 1), same, (1, 1)): 1,
        ((2, 8, 8, 8), (1, 1, 8, 4), (2, 2), ((0, 0), (0, 0)), (1, 1)): 1,
    }
