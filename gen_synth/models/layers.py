"""Building blocks shared by every generator and discriminator.

All layers work channels-last: the channel axis is the last one, any leading
shape is allowed (`[..., C]`). Weights use the equalized learning rate of
ProGAN/StyleGAN: they are stored as N(0, 1) / lr_mul and scaled at run time by
lr_mul / sqrt(fan_in), so Adam sees the same dynamic range in every layer.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_synth import xla_cpu

Dtype = Any
SQRT2 = float(np.sqrt(2.0))


def lrelu(x, slope: float = 0.2):
  return jnp.where(x >= 0, x, x * slope)


# name -> (function, default gain), as StyleGAN2's `bias_act`.
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "lrelu": (lrelu, SQRT2),
    "relu": (jax.nn.relu, SQRT2),
}


def bias_act(x, bias, activation: str = "linear", gain: Optional[float] = None,
             clamp: Optional[float] = None):
  """Adds `bias` on the last axis, applies the activation, its gain and a clamp.

  The clamp comes after the gain, as in StyleGAN2's fused op.
  """
  fn, default_gain = ACTIVATIONS[activation]
  if bias is not None:
    x = x + bias.astype(x.dtype)
  x = fn(x)
  gain = default_gain if gain is None else gain
  if gain != 1:
    x = x * gain
  if clamp is not None:
    x = jnp.clip(x, -clamp, clamp)
  return x


def normalize_2nd_moment(x, axis=-1, eps: float = 1e-8):
  """x / RMS(x) over `axis` (StyleGAN's pixel norm of z)."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


# Fewer output columns than this are padded with zero columns on the CPU
# backend (rows >= 4096): [8192, K] x [K, 3] forward and gradient (both
# operands) took 0.48 / 1.76 ms for K = 128 against 0.38 / 0.91 padded to 8,
# 0.25 / 0.97 against 0.25 / 0.53 for K = 64 (2-core AMD EPYC, gen_synth's
# XLA:CPU kernels).
_MIN_CPU_GEMM_COLUMNS = 8


def matmul_last(x, kernel):
  """x [..., C_in] @ kernel [C_in, C_out] -> [..., C_out], as one 2-D GEMM.

  The leading axes are flattened first (a free reshape), so the weight
  gradient is a 2-D x^T g that XLA:CPU hands to its GEMM with a transposed
  operand; contracting a 4-D x over its three leading axes made it copy x^T
  first: 92 vs 147 GFLOP/s for [4, 256, 8, 1024] x [1024, 1024] (2-core AMD
  EPYC, `gen_synth.xla_cpu` kernels).

  On the CPU backend, low-precision operands (bfloat16, float16) are
  multiplied with float32 accumulation and the product stays float32: the
  elementwise passes after it (demodulation, bias, activation, clamp, the
  next layer's scaling) run in float32 and only the GEMM operands are in the
  compute dtype, as YNNPACK's bfloat16 dots take them (`gen_synth.xla_cpu`).
  XLA:CPU runs bfloat16 elementwise code through conversions: CREPS-256's
  per-pixel half took 128 ms per image at batch 1 with bfloat16 activations,
  80 ms with float32 ones (2-core AMD EPYC, YNNPACK's dots in both), and the
  image moved closer to the float32 model's (PSNR 43.3 / 48.5 dB against
  40.9 / 44.0 for two random-initialisation samples). Other backends run the
  dot as before (in the operands' dtype).
  """
  x2 = x.reshape(-1, x.shape[-1])
  n = kernel.shape[-1]
  on_cpu = jax.default_backend() == "cpu"
  acc = jnp.float32 if on_cpu and xla_cpu.is_low_precision(x2.dtype) else None
  if n < _MIN_CPU_GEMM_COLUMNS and x2.shape[0] >= 4096 and on_cpu:
    # An RGB output (3 columns) over many pixels: XLA:CPU's GEMM runs 8
    # columns (zeros beyond n) as fast, and the input gradient's contraction
    # over 8 about twice as fast as over 3 (see _MIN_CPU_GEMM_COLUMNS).
    kernel = jnp.pad(kernel, ((0, 0), (0, _MIN_CPU_GEMM_COLUMNS - n)))
    y = jnp.dot(x2, kernel, preferred_element_type=acc)[:, :n]
  else:
    y = jnp.dot(x2, kernel, preferred_element_type=acc)
  return y.reshape(x.shape[:-1] + (n,))


class EqualDense(nn.Module):
  """Fully connected layer with equalized learning rate.

  [..., C_in] -> [..., features]. Stored weight [C_in, features] ~ N(0, 1)/lr_mul,
  runtime weight = stored * lr_mul / sqrt(C_in); stored bias = bias_init,
  runtime bias = stored * lr_mul.
  """
  features: int
  activation: str = "linear"
  lr_mul: float = 1.0
  bias_init: float = 0.0
  use_bias: bool = True
  clamp: Optional[float] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param(
        "kernel",
        lambda k, s, d: jax.random.normal(k, s, d) / self.lr_mul,
        (fan_in, self.features), self.param_dtype)
    kernel = kernel * (self.lr_mul / np.sqrt(fan_in))
    y = matmul_last(x.astype(self.dtype), kernel.astype(self.dtype))
    bias = None
    if self.use_bias:
      bias = self.param("bias", nn.initializers.constant(self.bias_init),
                        (self.features,), self.param_dtype) * self.lr_mul
    return bias_act(y, bias, self.activation, clamp=self.clamp)


class ModulatedDense(nn.Module):
  """Modulated fully-connected layer (StyleGAN2's 1x1 modulated conv).

  x: [B, ..., C_in], w: [B, w_dim] -> [B, ..., features].

  The style s = affine(w) ([B, C_in], bias init 1) scales the shared weight
  W [C_in, features] per sample; with `demodulate` each output column is then
  divided by sqrt(sum_in (W s)^2 + eps). Both are computed as one shared-weight
  GEMM: scale the input by s, multiply by W, scale the output by the
  demodulation coefficients - identical to building a weight per sample.
  Without demodulation (the to-RGB / to-bi-line layers) the style is multiplied
  by 1/sqrt(C_in) instead.
  """
  features: int
  demodulate: bool = True
  activation: str = "lrelu"
  clamp: Optional[float] = None
  eps: float = 1e-8
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, w):
    c_in = x.shape[-1]
    styles = EqualDense(c_in, bias_init=1.0, param_dtype=self.param_dtype,
                        name="affine")(w)                       # [B, C_in]
    weight = self.param("kernel", nn.initializers.normal(1.0),
                        (c_in, self.features), self.param_dtype)
    if not self.demodulate:
      styles = styles * (1.0 / np.sqrt(c_in))
    lead = (x.shape[0],) + (1,) * (x.ndim - 2)
    x = x.astype(self.dtype) * styles.reshape(lead + (c_in,)).astype(self.dtype)
    y = matmul_last(x, weight.astype(self.dtype))
    if self.demodulate:
      # sum_i (W[i, o] s[b, i])^2 = (s^2 @ W^2)[b, o], in float32.
      dcoefs = jax.lax.rsqrt(
          jnp.square(styles) @ jnp.square(weight.astype(jnp.float32)) + self.eps)
      y = y * dcoefs.reshape(lead + (self.features,)).astype(y.dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      self.param_dtype)
    return bias_act(y, bias, self.activation, clamp=self.clamp)


def modulated_dense_reference(x, styles, weight, bias, demodulate=True, eps=1e-8):
  """Explicit per-sample-weight modulated FC (for tests): [B, N, C_in] -> [B, N, C_out]."""
  w = weight[None] * styles[:, :, None]                         # [B, C_in, C_out]
  if demodulate:
    w = w * jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=1, keepdims=True) + eps)
  return jnp.einsum("bni,bio->bno", x, w) + bias


class MLP(nn.Module):
  """Stack of equalized dense layers: [..., C] -> [..., widths[-1]]."""
  widths: tuple
  activation: str = "lrelu"
  lr_mul: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.widths):
      x = EqualDense(width, activation=self.activation, lr_mul=self.lr_mul,
                     dtype=self.dtype, param_dtype=self.param_dtype,
                     name=f"fc{i}")(x)
    return x
