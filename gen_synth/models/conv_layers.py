"""Convolutional building blocks (StyleGAN2 style), channels-last NHWC.

Shared by the convolutional generators (PixelFolder, CIPS) and the StyleGAN2
discriminator:

- `fir_filter`: the general up-FIR-down op (StyleGAN2's `upfirdn2d`),
  `upsample_2x` / `downsample_2x` with the [1, 3, 3, 1] filter.
- `EqualConv2d`: equalized-learning-rate convolution (optional bias and
  activation, optional blur + stride-2 downsampling as in the StyleGAN2 D).
- `ModulatedConv2d`: StyleGAN2's modulated convolution with optional
  demodulation, computed with one shared weight (see its docstring).
- `NoiseInjection`, `StyledConv` (modulated conv + noise + bias + lrelu) and
  `ToRGB` (1x1 modulated conv to RGB plus the FIR-upsampled skip).

Weights are stored HWIO ([k, k, C_in, C_out]) as N(0, 1) and scaled at run
time by 1 / sqrt(C_in * k * k), as in the official PyTorch code.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_synth.models import conv_ops
from gen_synth.models import layers

Dtype = layers.Dtype
NOISE_MODES = ("random", "none")
_DIMS = ("NHWC", "HWIO", "NHWC")


# --- FIR filtering ---------------------------------------------------------

def make_fir_kernel(kernel: Sequence[float]) -> np.ndarray:
  """1-D taps -> separable 2-D kernel (outer product), or a 2-D kernel; normalised to sum 1."""
  k = np.asarray(kernel, np.float32)
  if k.ndim == 1:
    k = k[:, None] * k[None, :]
  return k / k.sum()


def _pads(padding):
  if len(padding) == 2:
    return tuple(padding) * 2
  if len(padding) == 4:
    return tuple(padding)
  raise ValueError(f"padding must be (p0, p1) or (y0, y1, x0, x1), got {padding}")


def fir_filter(x, kernel, up: int = 1, down: int = 1,
               padding: Union[Sequence[int], int] = (0, 0), gain: float = 1.0):
  """StyleGAN2's upfirdn2d on NHWC: upsample, pad, FIR-filter, downsample.

  x [B, H, W, C] -> [B, H', W', C] with H' = (H * up + y0 + y1 - kh) // down + 1.
  `up` inserts up-1 zeros after every sample; `padding` (p0, p1) or
  (y0, y1, x0, x1) pads (or crops, if negative) the upsampled signal; the
  kernel (1-D taps or 2-D, normalised to sum 1, times `gain`) is applied as a
  true convolution (flipped), per channel; then every `down`-th sample is kept.

  A 1-D kernel without upsampling (the discriminator's blur) runs as two
  separable passes of shifted multiply-adds: XLA:CPU runs depthwise
  convolutions (`feature_group_count=C`) slowly, and R1 differentiates them
  twice. Everything else (the generators' 2x upsampling) runs as one depthwise
  convolution, so it is a convolution for `gen_synth.cost` too (as
  upfirdn2d's conv2d call is for PyTorch's counter).
  """
  if isinstance(padding, int):
    padding = (padding, padding)
  y0, y1, x0, x1 = _pads(padding)
  zero = jnp.zeros((), x.dtype)
  x = jax.lax.pad(x, zero, [(0, 0, 0), (y0, y1 + up - 1, up - 1),
                            (x0, x1 + up - 1, up - 1), (0, 0, 0)])
  if np.ndim(kernel) == 1 and up == 1:
    taps = np.asarray(kernel, np.float64)[::-1] / np.sum(kernel)   # flip: convolution
    x = _fir_1d(x, taps * gain, axis=1, down=down)
    return _fir_1d(x, taps, axis=2, down=down)
  k = make_fir_kernel(kernel) * gain
  k = np.ascontiguousarray(k[::-1, ::-1])                  # flip: convolution
  c = x.shape[-1]
  w = jnp.broadcast_to(jnp.asarray(k, x.dtype)[:, :, None, None], k.shape + (1, c))
  return jax.lax.conv_general_dilated(
      x, w, window_strides=(down, down), padding="VALID",
      dimension_numbers=_DIMS, feature_group_count=c)


def _fir_1d(x, taps, axis: int, down: int):
  """sum_t taps[t] * x[.., t + down * n, ..] along `axis` ('valid'): a 1-D FIR correlation."""
  n_out = (x.shape[axis] - len(taps)) // down + 1
  y = None
  for t, tap in enumerate(taps):
    part = jax.lax.slice_in_dim(x, t, t + down * (n_out - 1) + 1, down, axis) * float(tap)
    y = part if y is None else y + part
  return y


def upsample_2x(x, kernel: Sequence[float] = (1, 3, 3, 1)):
  """[B, H, W, C] -> [B, 2H, 2W, C]: StyleGAN2's `Upsample` (up 2, gain 4)."""
  p = len(kernel) - 2
  return fir_filter(x, kernel, up=2, padding=((p + 1) // 2 + 1, p // 2), gain=4.0)


def downsample_2x(x, kernel: Sequence[float] = (1, 3, 3, 1)):
  """[B, H, W, C] -> [B, H/2, W/2, C]: StyleGAN2's `Downsample` (blur, keep every 2nd)."""
  p = len(kernel) - 2
  return fir_filter(x, kernel, down=2, padding=((p + 1) // 2, p // 2))


# --- Equalized convolution -------------------------------------------------

class EqualConv2d(nn.Module):
  """Convolution with equalized learning rate: [B, H, W, C_in] -> [B, H', W', features].

  Stored kernel [k, k, C_in, features] ~ N(0, 1) / lr_mul, runtime kernel =
  stored * lr_mul / sqrt(C_in k k); zero padding k // 2 ('same'). Optional bias
  and activation (`layers.bias_act`; with an activation this is the official
  `ConvLayer`: a bias-free conv followed by FusedLeakyReLU with its own bias).
  `down=2` is the StyleGAN2 discriminator's downsampling conv: FIR blur with
  padding ((p+1)//2, p//2), p = len(blur) - 2 + k - 1, then a stride-2 'valid'
  convolution (for a 1x1 kernel the blur keeps every 2nd sample itself and the
  convolution runs at stride 1: the same numbers, a quarter of the blur).
  `impl`: how the convolution and its gradients run (`conv_ops.conv2d`).
  """
  features: int
  kernel_size: int = 3
  down: int = 1
  use_bias: bool = True
  bias_init: float = 0.0
  activation: str = "linear"
  lr_mul: float = 1.0
  clamp: Optional[float] = None
  blur_kernel: Sequence[float] = (1, 3, 3, 1)
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c_in = self.kernel_size, x.shape[-1]
    kernel = self.param(
        "kernel", lambda key, s, d: jax.random.normal(key, s, d) / self.lr_mul,
        (k, k, c_in, self.features), self.param_dtype)
    kernel = kernel * (self.lr_mul / np.sqrt(c_in * k * k))
    x = x.astype(self.dtype)
    if self.down == 1:
      stride, padding = 1, k // 2
    elif self.down == 2:
      p = len(self.blur_kernel) - 2 + k - 1
      blur_down = 2 if k == 1 else 1
      x = fir_filter(x, self.blur_kernel, down=blur_down, padding=((p + 1) // 2, p // 2))
      stride, padding = 2 // blur_down, 0
    else:
      raise ValueError(f"down must be 1 or 2, got {self.down}")
    y = conv_ops.conv2d(x, kernel.astype(self.dtype), stride, padding, self.impl)
    bias = None
    if self.use_bias:
      bias = self.param("bias", nn.initializers.constant(self.bias_init),
                        (self.features,), self.param_dtype) * self.lr_mul
    return layers.bias_act(y, bias, self.activation, clamp=self.clamp)


# --- Modulated convolution -------------------------------------------------

def demodulation_coefficients(weight, styles, eps: float = 1e-8):
  """1 / sqrt(sum_{kh, kw, i} (weight * s)^2 + eps): weight [k, k, I, O], styles [B, I] -> [B, O].

  The k * k taps are summed as elementwise adds of [I, O] slices, not as a
  reduction over the two leading axes: XLA:CPU's YNNPACK reduction (kept by
  `gen_synth.xla_cpu`, and jaxlib's default) took 20 ms for a 3x3x512x512
  kernel against 0.4 ms for the slices, and 145 ms of a 480 ms batch-1
  PixelFolder-256 image in a `jax.profiler` trace (2-core AMD EPYC; README,
  "Speed against the official code"). Neutral elsewhere: one fusion.
  """
  w2 = jnp.square(weight.astype(jnp.float32))
  w2 = sum(w2[i, j] for i in range(w2.shape[0]) for j in range(w2.shape[1]))   # [I, O]
  return jax.lax.rsqrt(jnp.square(styles.astype(jnp.float32)) @ w2 + eps)


def modulated_conv2d_grouped(x, weight, styles, demodulate: bool = True,
                             eps: float = 1e-8):
  """Explicit per-sample-weight modulated conv (the official computation).

  x [B, H, W, I], weight [k, k, I, O] (already scaled), styles [B, I]
  -> [B, H, W, O]. Builds w_b = weight * s_b (demodulated per output
  channel) and runs one grouped convolution with B groups, zero padding k // 2.
  """
  b, h, w_, c_in = x.shape
  k, c_out = weight.shape[0], weight.shape[-1]
  wb = weight[None] * styles[:, None, None, :, None]                   # [B, k, k, I, O]
  if demodulate:
    wb = wb * jax.lax.rsqrt(jnp.sum(jnp.square(wb), axis=(1, 2, 3), keepdims=True) + eps)
  wb = jnp.transpose(wb, (1, 2, 3, 0, 4)).reshape(k, k, c_in, b * c_out)
  xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w_, b * c_in)
  y = jax.lax.conv_general_dilated(xg, wb, (1, 1), [(k // 2, k // 2)] * 2,
                                   dimension_numbers=_DIMS, feature_group_count=b)
  return jnp.transpose(y.reshape(h, w_, b, c_out), (2, 0, 1, 3))


class ModulatedConv2d(nn.Module):
  """StyleGAN2 modulated convolution: x [B, H, W, C_in], w [B, w_dim] -> [B, H, W, features].

  Styles s = affine(w) ([B, C_in], bias init 1). Kernel [k, k, C_in, features]
  ~ N(0, 1), runtime scale 1 / sqrt(C_in k k); zero padding k // 2, any odd k;
  no bias (the caller adds it). The per-sample weight W_b = scale * W * s_b,
  demodulated with `demodulate` (each output filter divided by
  sqrt(sum W_b^2 + eps)), is never built: the input is scaled by s, convolved
  with the shared weight, and the output scaled by the demodulation
  coefficients. This is exact for convolutions too, because s is constant over
  space and per input channel and the coefficients are per output channel
  (zero padding stays zero after scaling). `grouped=True` runs the official
  per-sample grouped convolution instead (same result up to rounding). `impl`:
  how the shared-weight convolution and its gradients run (`conv_ops.conv2d`).
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  eps: float = 1e-8
  grouped: bool = False
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, w):
    k, c_in = self.kernel_size, x.shape[-1]
    if k % 2 != 1:
      raise ValueError(f"ModulatedConv2d needs an odd kernel size, got {k}")
    styles = layers.EqualDense(c_in, bias_init=1.0, param_dtype=self.param_dtype,
                               name="affine")(w)                      # [B, C_in]
    weight = self.param("kernel", nn.initializers.normal(1.0),
                        (k, k, c_in, self.features), self.param_dtype)
    weight = weight * (1.0 / np.sqrt(c_in * k * k))
    if self.grouped:
      return modulated_conv2d_grouped(x.astype(jnp.float32), weight, styles,
                                      self.demodulate, self.eps).astype(self.dtype)
    x = x.astype(self.dtype) * styles[:, None, None, :].astype(self.dtype)
    wt = weight.astype(self.dtype)
    if k == 1:
      y = layers.matmul_last(x, wt[0, 0])
    else:
      y = conv_ops.conv2d(x, wt, 1, k // 2, self.impl)
    if self.demodulate:
      d = demodulation_coefficients(weight, styles, self.eps)         # [B, features]
      y = y * d[:, None, None, :].astype(y.dtype)
    return y


# --- Noise, styled conv, to-RGB --------------------------------------------

class NoiseInjection(nn.Module):
  """x [B, H, W, C] -> x + weight * n, n ~ N(0, 1) [B, H, W, 1] (scalar weight, init 0).

  noise_mode 'random': a fresh noise map from `self.make_rng('noise')` on every
  call (the official behaviour; apply with rngs={'noise': key}).
  'none': no noise (StyleGAN's noise_mode='none'); deterministic, used for
  rendering. The weight exists in both modes.
  """
  noise_mode: str = "random"

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", nn.initializers.zeros, (), jnp.float32)
    if self.noise_mode == "none":
      return x
    if self.noise_mode != "random":
      raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
    if not self.has_rng("noise"):
      raise ValueError("noise_mode='random' needs a 'noise' rng: apply(..., rngs={'noise': key}),"
                       " or build the model with noise_mode='none'")
    noise = jax.random.normal(self.make_rng("noise"), x.shape[:-1] + (1,), jnp.float32)
    return x + (weight * noise).astype(x.dtype)


class StyledConv(nn.Module):
  """Official `StyledConv`: modulated conv -> noise -> bias + lrelu (x sqrt 2).

  x [B, H, W, C_in], w [B, w_dim] -> [B, H, W, features].
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  noise_mode: str = "random"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, w):
    x = ModulatedConv2d(self.features, self.kernel_size, self.demodulate,
                        dtype=self.dtype, name="conv")(x, w)
    x = NoiseInjection(self.noise_mode, name="noise")(x)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return layers.bias_act(x, bias, "lrelu")


class ToRGB(nn.Module):
  """Official `ToRGB`: 1x1 modulated conv to 3 channels without demodulation, plus bias.

  x [B, H, W, C], w [B, w_dim], skip [B, H/2, W/2, 3] (`upsample`) or
  [B, H, W, 3] or None -> [B, H, W, 3]; the skip is FIR-upsampled 2x first
  when `upsample`.
  """
  upsample: bool = True
  blur_kernel: Sequence[float] = (1, 3, 3, 1)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, w, skip=None):
    y = ModulatedConv2d(3, 1, demodulate=False, dtype=self.dtype, name="conv")(x, w)
    bias = self.param("bias", nn.initializers.zeros, (3,), jnp.float32)
    y = y.astype(jnp.float32) + bias
    if skip is not None:
      if self.upsample:
        skip = upsample_2x(skip.astype(jnp.float32), self.blur_kernel)
      y = y + skip
    return y
