"""CIPS-skip: Conditionally-Independent Pixel Synthesis (Anokhin et al., CVPR 2021).

Structure of the official `CIPSskip` (saic-mdal/CIPS and BlingHe/PixelFolder
`model/GeneratorsCIPS.py`), channels-last. Every layer is 1x1, so any pixel
depends only on its own coordinates and w:

  z -> mapping -> w (one w for every layer; num_ws = 1)
  rows [H], cols [W] -> e = concat(sin(LFF(x, y)), emb(x, y))     [B, H, W, 2 * hidden]
     emb: the learned constant [R, R, hidden], sampled bilinearly (see below)
  x = StyledConv1x1(e)                                             [B, H, W, C(0)]
  for i in 0 .. log2(R) - 2:  two StyledConv1x1 -> rgb += ToRGB(x) (no upsampling)
  output rgb [B, H, W, 3], no tanh.

Widths C(i) = min(channel_base / 2^(i + 2), channel_max): 512 x5, 256, 128 at 256
(the official table with channel_multiplier 2).

The learned embedding. The official code uses the constant itself in training
mode at the training size and `grid_sample(mode='bilinear',
padding_mode='border')` of it at the coordinates otherwise (eval mode). gen_synth
always samples it bilinearly with border clamping, so every pixel is a function
of its coordinates alone (tiles equal crops; any size works):
- `emb_align_corners=True` (default): coordinate -1 / +1 is the centre of the
  first / last texel, so the default linspace(-1, 1, R) grid returns the
  constant exactly, i.e. the training-mode output. Positions within 1e-3
  texel of a texel centre are snapped to it, so float32 rounding of the
  coordinates does not blur the training grid.
- `emb_align_corners=False`: PyTorch's grid_sample default, which the official
  eval mode (and its FID evaluation, g_ema.eval()) uses: -1 / +1 are the outer
  texel edges, so even at R x R the constant is resampled at i * R / (R-1) - 0.5.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gen_synth.models import conv_layers
from gen_synth.models import interface
from gen_synth.models import layers
from gen_synth.models import mapping
from gen_synth.models import pixelfolder


def bilinear_axis_weights(coords, size: int, align_corners: bool):
  """Border-clamped bilinear taps along one axis.

  coords [n] in [-1, 1] -> (i0 [n], i1 [n], frac [n]): sample = (1 - frac) t[i0] + frac t[i1].
  """
  coords = coords.astype(jnp.float32)
  if align_corners:
    pos = (coords + 1) * (0.5 * (size - 1))
  else:
    pos = ((coords + 1) * size - 1) * 0.5
  pos = jnp.clip(pos, 0, size - 1)                     # padding_mode='border'
  nearest = jnp.round(pos)
  pos = jnp.where(jnp.abs(pos - nearest) < 1e-3, nearest, pos)
  i0 = jnp.floor(pos)
  frac = pos - i0
  i0 = i0.astype(jnp.int32)
  i1 = jnp.minimum(i0 + 1, size - 1)
  return i0, i1, frac


def sample_embedding(table, rows, cols, align_corners: bool = True):
  """Bilinear, border-clamped lookup: table [R, R, C], rows [H], cols [W] -> [H, W, C].

  Separable: the sampling grid is the product of the row and column
  coordinates, so the rows are interpolated first, then the columns.
  """
  r0, r1, fr = bilinear_axis_weights(rows, table.shape[0], align_corners)
  c0, c1, fc = bilinear_axis_weights(cols, table.shape[1], align_corners)
  t = table[r0] * (1 - fr)[:, None, None] + table[r1] * fr[:, None, None]   # [H, R, C]
  return t[:, c0] * (1 - fc)[None, :, None] + t[:, c1] * fc[None, :, None]


class CIPS(interface.GeneratorInterface, nn.Module):
  """CIPS-skip generator. See the module docstring."""
  resolution: int = 256
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  hidden_size: int = 512
  channel_base: int = 32768
  channel_max: int = 512
  emb_align_corners: bool = True
  noise_mode: str = "random"
  coord_convention: str = "linspace"
  dtype: layers.Dtype = jnp.float32

  # Every layer is 1x1: a pixel depends only on its own coordinates (and w).
  pixel_independent = True
  coord_range = (-1.0, 1.0)
  num_ws = 1      # the official CIPS feeds the same w to every layer

  @property
  def num_blocks(self):
    return int(np.log2(self.resolution)) - 1

  def channels(self, i):
    return min(self.channel_base // 2 ** (i + 2), self.channel_max)

  def setup(self):
    r = self.resolution
    if r < 4 or r & (r - 1):
      raise ValueError(f"CIPS resolution must be a power of two >= 4, got {r}")
    self.mapping_net = mapping.MappingNetwork(
        z_dim=self.z_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_layers, name="mapping")
    self.lff = pixelfolder.LFF(self.hidden_size, name="lff")
    self.emb = self.param("emb", nn.initializers.normal(1.0), (r, r, self.hidden_size))
    styled = lambda n, name: conv_layers.StyledConv(
        n, 1, noise_mode=self.noise_mode, dtype=self.dtype, name=name)
    self.conv1 = styled(self.channels(0), "conv1")
    self.linears = [styled(self.channels(i // 2), f"linear{i}")
                    for i in range(2 * self.num_blocks)]
    self.to_rgbs = [conv_layers.ToRGB(upsample=False, dtype=self.dtype, name=f"to_rgb{i}")
                    for i in range(self.num_blocks)]

  # --- the generator interface (mapping, __call__: interface.GeneratorInterface)

  def synthesis(self, ws, rows=None, cols=None, height=None, width=None):
    """ws [B, 1, w_dim], rows [H], cols [W] -> images [B, H, W, 3]."""
    rows = self.default_coords(height or self.resolution) if rows is None else rows
    cols = self.default_coords(width or self.resolution) if cols is None else cols
    w = ws[:, 0]
    feats = jnp.concatenate(
        [self.lff(rows, cols), sample_embedding(self.emb, rows, cols, self.emb_align_corners)],
        axis=-1)                                                      # [H, W, 2 * hidden]
    x = jnp.broadcast_to(feats[None].astype(self.dtype), (w.shape[0],) + feats.shape)
    x = self.conv1(x, w)
    rgb = None
    for i, to_rgb in enumerate(self.to_rgbs):
      x = self.linears[2 * i](x, w)
      x = self.linears[2 * i + 1](x, w)
      rgb = to_rgb(x, w, rgb)
    return rgb.astype(jnp.float32)
