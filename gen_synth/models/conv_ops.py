"""A 2-D convolution whose gradients of every order are the three first-order maps.

The three maps of one convolution are bilinear and each one's derivatives are
the other two:

  F(x, w) = conv(x, w)            forward                [B, H', W', O]
  I(g, w) = F_x^T g               input gradient         [B, H, W, I]
  W(x, g) = F_w^T g               weight gradient        [k, k, I, O]

  vjp F: g   -> (I(g, w),  W(x, g))
  vjp I: c_x -> (F(c_x, w), W(c_x, g))
  vjp W: c_w -> (I(g, c_w), F(x, c_w))

`conv2d` wires these with custom VJPs, so gradients of gradients (R1, path
length) are again F, I and W in their standard layouts. JAX's own second-order
derivative of a convolution is a convolution in new layouts (a weight gradient
with the output dimensions swapped; for stride 2 a weight gradient with input
dilation), which XLA:CPU runs far slower: R1 of the res-128 D took 77 s with
'xla' and 13 s with 'maps' (2-core AMD EPYC, `gen_synth.xla_cpu` kernels).

`impl`:
- 'xla': `lax.conv_general_dilated` with JAX's own gradients (GPUs and TPUs
  run every layout fast).
- 'maps': the structure above, each map one XLA convolution.
- 'gemm': the same, but W as a sum of k*k shifted GEMMs
  (dW[i, j] = sum_{b,p,q} x_pad[b, i + s p, j + s q, :]^T g[b, p, q, :]): for
  XLA:CPU with YNNPACK convolutions (jaxlib's default, see
  `gen_synth.xla_cpu`), whose weight gradient runs at 6-22 % of the GEMM peak.
- 'auto': 'maps' on CPU, 'xla' elsewhere (decided when traced).
The numbers are those of `lax.conv_general_dilated` up to float rounding.
"""

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "maps", "gemm")
_DIMS = ("NHWC", "HWIO", "NHWC")


class ConvSpec(NamedTuple):
  """Static description of one convolution (hashable)."""
  stride: int
  padding: Tuple[Tuple[int, int], Tuple[int, int]]   # ((top, bottom), (left, right)), >= 0
  gemm_weight_grad: bool = False                     # W as shifted GEMMs ('gemm')


def resolve_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
  if impl == "auto":
    return "maps" if jax.default_backend() == "cpu" else "xla"
  return impl


def _xla_conv(x, w, spec: ConvSpec):
  return jax.lax.conv_general_dilated(x, w, (spec.stride,) * 2, spec.padding,
                                      dimension_numbers=_DIMS)


def _input_grad(g, w, spec, in_hw):
  """I(g, w): [B, H', W', O] -> [B, H, W, I], XLA's transposed convolution."""
  x_aval = jax.ShapeDtypeStruct((g.shape[0],) + tuple(in_hw) + (w.shape[2],), g.dtype)
  (x_ct,) = jax.linear_transpose(lambda x: _xla_conv(x, w, spec), x_aval)(g)
  return x_ct


def _weight_grad(x, g, spec, k_hw):
  """W(x, g): x [B, H, W, I], g [B, H', W', O] -> [kh, kw, I, O]."""
  if spec.gemm_weight_grad:
    return _weight_grad_gemm(x, g, spec, k_hw)
  w_aval = jax.ShapeDtypeStruct(tuple(k_hw) + (x.shape[3], g.shape[3]), x.dtype)
  (w_ct,) = jax.linear_transpose(lambda w: _xla_conv(x, w, spec), w_aval)(g)
  return w_ct


def _weight_grad_gemm(x, g, spec, k_hw):
  """W(x, g) as kh*kw GEMMs: x [B, H, W, I], g [B, H', W', O] -> [kh, kw, I, O].

  Each tap is dW[i, j]^T = g^T [O, N] @ patch_ij [N, I] (N = B H' W'): g is
  transposed once and every GEMM is a plain row-major one; contracting both
  NHWC operands over their leading N (x^T g) made XLA:CPU transpose each
  tap's patch again: 1.6-1.9x slower at 64-128 px (measured on an AVX-512
  Xeon, 3x3, batch 4, 128-256 channels).
  """
  (pt, pb), (pl, pr) = spec.padding
  s, (kh, kw) = spec.stride, k_hw
  b, ho, wo, o = g.shape
  c = x.shape[3]
  x_pad = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  g_t = g.reshape(b * ho * wo, o).T                               # [O, N]
  taps = []
  for i in range(kh):
    for j in range(kw):
      patch = jax.lax.slice(x_pad, (0, i, j, 0),
                            (b, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c),
                            (1, s, s, 1))                          # [B, H', W', I]
      taps.append(jnp.dot(g_t, patch.reshape(b * ho * wo, c),
                          preferred_element_type=jnp.float32))    # [O, I]
  w_t = jnp.stack(taps).reshape(kh, kw, o, c)
  return jnp.transpose(w_t, (0, 1, 3, 2)).astype(x.dtype)        # [kh, kw, I, O]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_f(x, w, spec):
  return _xla_conv(x, w, spec)


# Each fwd rule computes its output through the custom_vjp function itself, not
# its body: under a second differentiation (R1, path length) JAX differentiates
# the fwd rule of the inner level with the outer level's autodiff, which would
# otherwise see the plain XLA convolution and emit JAX's own second-order
# convolutions (new layouts, slow on XLA:CPU).
def _conv_f_fwd(x, w, spec):
  return _conv_f(x, w, spec), (x, w)


def _conv_f_bwd(spec, res, g):
  x, w = res
  return _conv_i(g, w, spec, x.shape[1:3]), _conv_w(x, g, spec, w.shape[:2])


_conv_f.defvjp(_conv_f_fwd, _conv_f_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_i(g, w, spec, in_hw):
  return _input_grad(g, w, spec, in_hw)


def _conv_i_fwd(g, w, spec, in_hw):
  return _conv_i(g, w, spec, in_hw), (g, w)


def _conv_i_bwd(spec, in_hw, res, c_x):
  g, w = res
  return _conv_f(c_x, w, spec), _conv_w(c_x, g, spec, w.shape[:2])


_conv_i.defvjp(_conv_i_fwd, _conv_i_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_w(x, g, spec, k_hw):
  return _weight_grad(x, g, spec, k_hw)


def _conv_w_fwd(x, g, spec, k_hw):
  return _conv_w(x, g, spec, k_hw), (x, g)


def _conv_w_bwd(spec, k_hw, res, c_w):
  x, g = res
  return _conv_i(g, c_w, spec, x.shape[1:3]), _conv_f(x, c_w, spec)


_conv_w.defvjp(_conv_w_fwd, _conv_w_bwd)


def conv2d(x, w, stride: int = 1, padding=((0, 0), (0, 0)), impl: str = "auto"):
  """NHWC x [B, H, W, I], HWIO w [kh, kw, I, O] -> [B, H', W', O] (zero padding, no dilation).

  `padding` ((top, bottom), (left, right)) or an int for all four sides.
  """
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  impl = resolve_impl(impl)
  spec = ConvSpec(int(stride), tuple(tuple(int(p) for p in pair) for pair in padding),
                  gemm_weight_grad=impl == "gemm")
  if min(p for pair in spec.padding for p in pair) < 0:
    raise ValueError(f"conv2d needs non-negative padding, got {padding}")
  if impl == "xla":
    return _xla_conv(x, w, spec)
  return _conv_f(x, w.astype(x.dtype), spec)
