"""StyleGAN2 residual discriminator (the D the official CREPS code trains with).

StyleGAN2-ADA `Discriminator` with architecture 'resnet', c_dim 0:
  img [B, R, R, 3] -> fromrgb (1x1, lrelu) at R
  blocks R .. 8: y = skip(x) (1x1, no bias, blur + stride 2, gain sqrt .5)
                 x = conv1(conv0(x)) (3x3 lrelu; conv1 blur + stride 2, gain sqrt .5)
                 x = x + y
  epilogue at 4: minibatch-stddev (group 4, 1 channel), conv 3x3 lrelu,
                 fc (C*16 -> C, lrelu), out (C -> 1)          -> logits [B]
Widths C(res) = min(channel_base / res, channel_max); CREPS trains with
channel_base 32768 and channel_max 512. Convolutions clamp at 256 (scaled by
the layer gain), as `conv_clamp=256`. `conv_impl` ('auto' | 'xla' | 'maps' |
'gemm'): how the convolutions and their gradients of every order run
(`conv_ops.conv2d`; 'auto' = 'maps' on CPU, XLA's own gradients on GPU/TPU).

The epilogue flattens [B, 4, 4, C] channels-last, where the official code
flattens NCHW: the same function class with a permuted fc weight.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gen_synth.models import conv_layers
from gen_synth.models import layers

SQRT_HALF = float(np.sqrt(0.5))


def minibatch_stddev(x, group_size: int = 4, num_channels: int = 1,
                     num_batches: int = 1):
  """[N, H, W, C] -> [N, H, W, C + num_channels] (StyleGAN2's MinibatchStdLayer).

  Sample n belongs to group n mod (N / G), as the official reshape(G, -1, ...)
  puts it; each appended channel holds its group's mean feature stddev.
  `num_batches` > 1: x holds that many batches interleaved (sample i of batch
  k at row num_batches * i + k), each grouped on its own, as if D had been
  called on each batch alone.
  """
  if num_batches > 1:
    n = x.shape[0]
    if n % num_batches:
      raise ValueError(f"batch {n} must be divisible by num_batches {num_batches}")
    parts = x.reshape((n // num_batches, num_batches) + x.shape[1:])
    out = [minibatch_stddev(parts[:, k], group_size, num_channels)
           for k in range(num_batches)]
    return jnp.stack(out, axis=1).reshape((n,) + out[0].shape[1:])
  n, h, w, c = x.shape
  g = min(group_size, n)
  if n % g:
    raise ValueError(f"batch {n} must be divisible by the mbstd group size {g}")
  f = num_channels
  y = x.astype(jnp.float32).reshape(g, n // g, h, w, f, c // f)
  y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)          # [n/G, H, W, F, c]
  y = jnp.mean(y, axis=(1, 2, 4))                   # [n/G, F]
  y = jnp.tile(y, (g, 1))[:, None, None, :]         # [N, 1, 1, F]
  y = jnp.broadcast_to(y, (n, h, w, f)).astype(x.dtype)
  return jnp.concatenate([x, y], axis=-1)


class DiscriminatorBlock(nn.Module):
  """Residual block: [B, H, W, C_in or 3] -> [B, H/2, W/2, out_channels]."""
  tmp_channels: int
  out_channels: int
  from_rgb: bool = False
  clamp: Optional[float] = 256.0
  conv_impl: str = "auto"
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda n, k, **kw: conv_layers.EqualConv2d(n, k, impl=self.conv_impl,
                                                      dtype=self.dtype, **kw)
    if self.from_rgb:
      x = conv(self.tmp_channels, 1, activation="lrelu", clamp=self.clamp, name="fromrgb")(x)
    y = conv(self.out_channels, 1, down=2, use_bias=False, name="skip")(x) * SQRT_HALF
    x = conv(self.tmp_channels, 3, activation="lrelu", clamp=self.clamp, name="conv0")(x)
    x = conv(self.out_channels, 3, down=2, activation="lrelu", clamp=self.clamp,
             name="conv1")(x) * SQRT_HALF
    return y + x


class Discriminator(nn.Module):
  """img [B, R, R, 3] -> logits [B] (float32)."""
  resolution: int = 256
  channel_base: int = 32768
  channel_max: int = 512
  mbstd_group_size: int = 4
  mbstd_num_channels: int = 1
  conv_clamp: Optional[float] = 256.0
  conv_impl: str = "auto"
  dtype: layers.Dtype = jnp.float32

  def channels(self, res):
    return min(self.channel_base // res, self.channel_max)

  @nn.compact
  def __call__(self, img, num_batches: int = 1):
    """img [N, R, R, 3] -> logits [N]; `num_batches`: see `minibatch_stddev`."""
    if img.shape[1:3] != (self.resolution, self.resolution):
      raise ValueError(f"D expects {self.resolution}x{self.resolution} images, "
                       f"got {img.shape[1]}x{img.shape[2]}")
    x = img.astype(self.dtype)
    res = self.resolution
    while res > 4:
      x = DiscriminatorBlock(self.channels(res), self.channels(res // 2),
                             from_rgb=res == self.resolution, clamp=self.conv_clamp,
                             conv_impl=self.conv_impl, dtype=self.dtype, name=f"b{res}")(x)
      res //= 2
    c = self.channels(4)
    x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels, num_batches)
    x = conv_layers.EqualConv2d(c, 3, activation="lrelu", clamp=self.conv_clamp,
                                impl=self.conv_impl, dtype=self.dtype, name="b4_conv")(x)
    x = layers.EqualDense(c, activation="lrelu", dtype=self.dtype,
                          name="b4_fc")(x.reshape(x.shape[0], -1))
    x = layers.EqualDense(1, dtype=self.dtype, name="b4_out")(x)
    return x[:, 0].astype(jnp.float32)


def build_discriminator(d_config, dtype=jnp.float32) -> Discriminator:
  return Discriminator(
      resolution=d_config.resolution, channel_base=d_config.channel_base,
      channel_max=d_config.channel_max, mbstd_group_size=d_config.mbstd_group_size,
      mbstd_num_channels=d_config.mbstd_num_channels, conv_clamp=d_config.conv_clamp,
      conv_impl=d_config.get("conv_impl", "auto"), dtype=dtype)
