"""conv_ops.conv2d: the custom-VJP maps ('maps', 'gemm') equal XLA's convolution gradients, of every order."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth.models import conv_layers
from gen_synth.models import conv_ops
from gen_synth.models import discriminator as discriminator_lib
from gen_synth import losses

CASES = [  # (kernel, stride, padding, H, W)
    (3, 1, 1, 9, 7),
    (3, 2, 0, 10, 9),                 # D's conv1 after the blur (valid, stride 2)
    (1, 2, 0, 8, 8),
    (1, 1, 0, 5, 6),
    (4, 2, ((1, 2), (2, 1)), 11, 9),  # uneven padding, odd sizes: rows left out by the stride
]


def _rel(a, b):
  """max |a - b| relative to max |a| (0 when both are all zeros, inf when only a is)."""
  return float(jnp.max(jnp.abs(a - b))) / max(float(jnp.max(jnp.abs(a))), 1e-30)


def _inputs(k, h, w, c_in=5, c_out=6, batch=3):
  kx, kw = jax.random.split(jax.random.PRNGKey(k * 100 + h))
  return (jax.random.normal(kx, (batch, h, w, c_in)),
          jax.random.normal(kw, (k, k, c_in, c_out)) / np.sqrt(c_in * k * k))


@pytest.mark.parametrize("impl", ["maps", "gemm"])
@pytest.mark.parametrize("k,stride,padding,h,w", CASES)
def test_gradients_of_every_order_equal_xla(k, stride, padding, h, w, impl):
  x, kernel = _inputs(k, h, w)

  def results(impl):
    def d(x, kernel):                            # a nonlinear scalar of the conv
      return jnp.sum(jnp.tanh(conv_ops.conv2d(x, kernel, stride, padding, impl)))

    def r1(kernel, x):                           # R1's shape: |grad_x|^2, then grad again
      return jnp.sum(jnp.square(jax.grad(d)(x, kernel)))

    def grad_of_wgrad(x, kernel):                # second order through the weight gradient
      return jnp.sum(jnp.square(jax.grad(d, argnums=1)(x, kernel)))

    y = conv_ops.conv2d(x, kernel, stride, padding, impl)
    return (y,) + jax.grad(d, argnums=(0, 1))(x, kernel) + jax.grad(r1, argnums=(0, 1))(
        kernel, x) + jax.grad(grad_of_wgrad, argnums=(0, 1))(x, kernel)

  names = ["forward", "dx", "dw", "r1 dw", "r1 dx", "wgrad^2 dx", "wgrad^2 dw"]
  for name, a, b in zip(names, results("xla"), results(impl)):
    assert a.shape == b.shape, name
    assert _rel(a, b) < 2e-6, (name, _rel(a, b))


def test_gemm_weight_gradient_is_not_xla_convolution():
  """The point of 'gemm': its weight gradient holds no convolution, only dots."""
  x, kernel = _inputs(3, 8, 8)
  g = jax.random.normal(jax.random.PRNGKey(3), (3, 8, 8, 6))
  _, vjp = jax.vjp(lambda w: conv_ops.conv2d(x, w, 1, 1, "gemm"), kernel)
  text = jax.jit(vjp).lower(g).as_text()
  assert "stablehlo.convolution" not in text and "stablehlo.dot_general" in text
  _, vjp = jax.vjp(lambda w: conv_ops.conv2d(x, w, 1, 1, "xla"), kernel)
  assert "stablehlo.convolution" in jax.jit(vjp).lower(g).as_text()


def test_r1_second_order_has_no_xla_weight_gradient_convolution():
  """grad_w |grad_x conv|^2 (R1's shape): with 'gemm' no convolution has the
  weight-gradient layout (input feature dim first, `[f, ...]`); 'xla' has some.
  The fwd rules must go through their own custom_vjp for this to hold."""
  x, kernel = _inputs(3, 8, 8)

  def r1(w, impl):
    gx = jax.grad(lambda x: jnp.sum(jnp.sin(conv_ops.conv2d(x, w, 1, 1, impl))))(x)
    return jnp.sum(jnp.square(gx))

  for impl, expected in (("gemm", False), ("xla", True)):
    text = jax.jit(jax.grad(lambda w, impl=impl: r1(w, impl))).lower(kernel).as_text()
    convs = [l for l in text.splitlines() if "stablehlo.convolution" in l]
    assert convs
    assert any("dim_numbers = [f," in l for l in convs) == expected, impl


def _conv_signatures(text):
  """{(dim_numbers, window)} of the convolutions in StableHLO text."""
  return {m.groups() for m in re.finditer(
      r"stablehlo\.convolution\(.*dim_numbers = (.*?), window = \{([^}]*)\}", text)}


@pytest.mark.parametrize("stride", [1, 2])
def test_maps_second_order_is_made_of_the_first_order_convolutions(stride):
  """'maps': R1 (grad_w |grad_x conv|^2) and the gradient of the weight
  gradient run only the convolutions of the first-order VJP (F, I, W in their
  standard layouts); JAX's own second order ('xla') brings new ones."""
  x, kernel = _inputs(3, 9, 9)
  g = jax.random.normal(jax.random.PRNGKey(3), (3, (9 + 2 - 3) // stride + 1,
                                                (9 + 2 - 3) // stride + 1, 6))

  def lowered(impl):
    conv = lambda x, w: conv_ops.conv2d(x, w, stride, 1, impl)
    first = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)).lower(x, kernel, g).as_text()

    def d(x, w):
      return jnp.sum(jnp.sin(conv(x, w)))

    second = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.square(jax.grad(d)(x, w))),
                              argnums=(0, 1))).lower(kernel, x).as_text()
    third = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.square(jax.grad(d, argnums=1)(x, w))),
                             argnums=(0, 1))).lower(x, kernel).as_text()
    forward = jax.jit(conv).lower(x, kernel).as_text()
    return (_conv_signatures(forward) | _conv_signatures(first),
            _conv_signatures(second) | _conv_signatures(third))

  first, higher = lowered("maps")
  assert len(first) == 3 and higher <= first, (first, higher)
  first, higher = lowered("xla")
  assert not higher <= first


def test_auto_is_maps_on_cpu_and_impl_is_checked():
  assert conv_ops.resolve_impl("auto") == ("maps" if jax.default_backend() == "cpu" else "xla")
  with pytest.raises(ValueError, match="conv impl"):
    conv_ops.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl="cudnn")


def test_separable_blur_equals_depthwise_convolution():
  """The D blur (1-D taps, no upsampling) runs as shifted multiply-adds: same numbers as the 2-D FIR."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 10, 4))
  for down, padding in [(1, (2, 2)), (2, (1, 1)), (2, (2, 1, 0, 3)), (1, (-1, 2))]:
    sep = conv_layers.fir_filter(x, [1, 3, 3, 1], down=down, padding=padding, gain=2.0)
    dense = conv_layers.fir_filter(x, conv_layers.make_fir_kernel([1, 3, 3, 1]), down=down,
                                   padding=padding, gain=2.0)
    assert sep.shape == dense.shape
    np.testing.assert_allclose(sep, dense, atol=1e-6)


@pytest.mark.parametrize("impl", ["maps", "gemm"])
def test_discriminator_logits_grads_and_r1_equal_across_impls(impl):
  d_xla = discriminator_lib.Discriminator(resolution=16, channel_base=128, channel_max=32,
                                          conv_impl="xla")
  d_gemm = d_xla.clone(conv_impl=impl)
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 16, 16, 3), minval=-1, maxval=1)
  params = d_xla.init(jax.random.PRNGKey(0), x)["params"]

  def all_of(d):
    logits = d.apply({"params": params}, x)
    main = jax.grad(lambda p: jnp.mean(jax.nn.softplus(d.apply({"params": p}, x))))(params)
    r1 = jax.grad(lambda p: jnp.mean(losses.r1_penalty(
        lambda y: d.apply({"params": p}, y), x)[0]))(params)
    return logits, main, r1

  (la, ma, ra), (lb, mb, rb) = all_of(d_xla), all_of(d_gemm)
  assert _rel(la, lb) < 1e-5
  for a, b in zip(jax.tree.leaves(ma) + jax.tree.leaves(ra),
                  jax.tree.leaves(mb) + jax.tree.leaves(rb)):
    assert _rel(a, b) < 1e-4
