"""CREPS: Column-Row Entangled Pixel Synthesis (Thanh Tran et al., CVPR 2023).

Structure of the official `train.py --cfg=creps` generator (see
../shared/reference/official_architecture_facts.md), channels-last:

  z -> mapping -> ws [B, num_ws, w_dim], num_ws = 2 * n_blocks + 1
  rows [H], cols [W] -> Fourier line inputs [B, H | W, rank, C]
  blocks b4 .. bR (modulated FCs applied to every line position); from b8 on
  each block's to-bi-line output [B, n, rank, 32] is accumulated, and after
  every block the accumulated row and column lines are composed into a 2-D
  feature map (the thick bi-line einsum):  F[b,h,w,c] = 0.5 sum_r X[b,h,r,c] Y[b,w,r,c]
  fusion: E_8 = F_8, E_l = decoder_l(E_{l-1}) + F_l, E = decoder_last(E_R)
  rgb = decoder_img(E) + refine0(E).rgb + refine1(...).rgb      -> [B, H, W, 3]

Every block works at the output resolution; the block names only select the
width C(b) = min(channel_base / b, channel_max). Rows and columns never
interact before the composition, so a crop or a tile needs only its own rows
and columns (`line_features` + `compose`).

`biline=False` gives CREPS-NB, the paper's Table 4 ablation: the same blocks
and widths applied per pixel to a dense 2-D Fourier input, the to-32-channel
outputs accumulated as a 2-D map, no composition and no decoders, then the
same to-image and refinement layers.

Left out on purpose (built but never run by the official code): b4's
to-bi-line layer and `decoder_8`, 578,880 parameters at every resolution.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_synth.models import embeddings
from gen_synth.models import interface
from gen_synth.models import layers
from gen_synth.models import mapping


# The per-pixel half is narrow GEMMs (K = 32-128) and elementwise passes over
# every pixel, bound by memory traffic when run over a whole batch at once; in
# tiles of this many pixels its activations stay in cache (CPU; measured in
# experiments/benchmarks/compose.py).
AUTO_COMPOSE_TILE_PIXELS = 8192


def _compose_in_row_tiles(model, variables, ws, row_feats, col_feats, tile_rows):
  """`model.compose` run on `tile_rows` rows (of every sample) at a time.

  model: an unbound CREPS; variables: its variables. Shapes as `compose`. The
  loop runs over blocks of rows and keeps the batch axis whole, so a
  batch-sharded call tiles each device's own samples. Each tile is
  rematerialised in the backward pass (jax.checkpoint): no per-pixel
  activation outlives its tile. H is zero-padded to a multiple of tile_rows;
  the padded rows are cut from the output.
  """
  num_l, b, h = row_feats.shape[:3]
  n = -(-h // tile_rows)
  rows = jnp.pad(row_feats, [(0, 0), (0, 0), (0, n * tile_rows - h), (0, 0), (0, 0)])
  rows = rows.reshape((num_l, b, n, tile_rows) + rows.shape[3:])
  rows = tuple(jnp.moveaxis(rows, 2, 1))                        # L x [n, B, th, rank, 32]
  # The lines of each level as their own array: a tile's gradient for them is
  # then L arrays, not L slices padded into one [L, ...] array per tile.
  cols = tuple(col_feats)                                       # L x [B, W, rank, 32]

  @jax.checkpoint
  def tile(rows_t):                                             # -> [B, th, W, 3]
    return model.apply(variables, ws, rows_t, cols, method="_compose_once")

  out = jnp.moveaxis(jax.lax.map(tile, rows), 0, 1)             # [B, n, th, W, 3]
  return out.reshape((b, n * tile_rows) + out.shape[3:])[:, :h]


def _biline_einsum(x, y):
  return 0.5 * jnp.einsum("bhrc,bwrc->bhwc", x, y)


# The product F and its two vjp maps are bilinear, and each one's derivatives
# are the other two (as conv_ops does for a convolution):
#
#   F(x, y)  = 0.5 sum_r x[b,h,r,c] y[b,w,r,c]    [B, H, W, C]   the product
#   Dx(g, y) = 0.5 sum_w g[b,h,w,c] y[b,w,r,c]    [B, H, rank, C] its x-gradient
#   Dy(g, x) = 0.5 sum_h g[b,h,w,c] x[b,h,r,c]    [B, W, rank, C] its y-gradient
#
#   vjp F:  g  -> (Dx(g, y),  Dy(g, x))
#   vjp Dx: cx -> (F(cx, y),  Dy(g, cx))
#   vjp Dy: cy -> (F(x, cy),  Dx(g, cy))
#
# so gradients of every order (the path-length phase takes two) are these
# three maps, each in its fast form on XLA:CPU. Autodiff of an unrolled form
# would instead emit one reduction per unrolled term: the path-length phase of
# CREPS-256 ran 3,072 of them per step.

# Tiles of up to this many rows take the unrolled form of Dy.
_BILINE_UNROLLED_MAX_ROWS = 32


def _biline_f_impl(x, y):
  # One elementwise pass over the output: rank broadcast multiply-adds that
  # XLA fuses into one loop, channels innermost. The einsum is a dot with
  # batch axes (b, c) and a contraction of `rank` = 8, which XLA:CPU runs as
  # transposes around B*C tiny GEMMs.
  out = x[:, :, None, 0] * y[:, None, :, 0]
  for r in range(1, x.shape[2]):
    out = out + x[:, :, None, r] * y[:, None, :, r]
  return 0.5 * out


def _biline_dx_impl(g, y):
  # A sum over every column of the tile: the einsum's dot.
  return 0.5 * jnp.einsum("bhwc,bwrc->bhrc", g, y)


def _biline_dy_impl(g, x):
  # A sum over the tile's few rows: unrolled multiply-adds, as the product.
  if x.shape[1] > _BILINE_UNROLLED_MAX_ROWS:
    return 0.5 * jnp.einsum("bhwc,bhrc->bwrc", g, x)
  dy = g[:, 0, :, None] * x[:, 0, None]
  for h in range(1, x.shape[1]):
    dy = dy + g[:, h, :, None] * x[:, h, None]
  return 0.5 * dy


def _closed_bilinear(impl, vjp):
  """`impl(a, b)` as a custom_vjp whose cotangent map is `vjp(a, b, ct)` -> (ct_a, ct_b).

  The fwd rule computes its output through the custom_vjp function itself, so
  that a second differentiation sees the three maps again, not their bodies.
  """
  fn = jax.custom_vjp(impl)
  fn.defvjp(lambda a, b: (fn(a, b), (a, b)), lambda res, ct: vjp(*res, ct))
  return fn


_biline_f = _closed_bilinear(
    _biline_f_impl, lambda x, y, g: (_biline_dx(g, y), _biline_dy(g, x)))
_biline_dx = _closed_bilinear(
    _biline_dx_impl, lambda g, y, cx: (_biline_f(cx, y), _biline_dy(g, cx)))
_biline_dy = _closed_bilinear(
    _biline_dy_impl, lambda g, x, cy: (_biline_f(x, cy), _biline_dx(g, cy)))


def thick_biline(x, y):
  """The thick bi-line product: x [B, H, rank, C], y [B, W, rank, C] -> [B, H, W, C].

  F[b,h,w,c] = 0.5 sum_r x[b,h,r,c] y[b,w,r,c]. On the CPU backend the
  product is an unrolled sum over the rank (a tile of CREPS-256's compose,
  batch 4: 0.5 ms instead of 2.9 ms), y's gradient an unrolled sum over the
  rows when H <= _BILINE_UNROLLED_MAX_ROWS, x's gradient the einsum's, and
  every higher derivative these three maps again (README, "What makes the CPU
  step fast"); elsewhere the einsum.
  """
  if jax.default_backend() == "cpu":
    return _biline_f(x, y)
  return _biline_einsum(x, y)


class SynthesisBlock(nn.Module):
  """fc0 (optional), fc1 and to-bi-line (optional): [B, ..., C_in] -> ([B, ..., C], [B, ..., out] | None)."""
  channels: int
  out_channels: int = 32
  has_fc0: bool = True
  has_tores: bool = True
  clamp: Optional[float] = 256.0
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, w_fc0, w_fc1, w_tores):
    dense = lambda n, **kw: layers.ModulatedDense(n, clamp=self.clamp,
                                                  dtype=self.dtype, name=kw.pop("name"), **kw)
    if self.has_fc0:
      x = dense(self.channels, name="fc0")(x, w_fc0)
    x = dense(self.channels, name="fc1")(x, w_fc1)
    y = None
    if self.has_tores:
      y = dense(self.out_channels, demodulate=False, activation="linear",
                name="tores")(x, w_tores)
    return x, y


class CREPS(interface.GeneratorInterface, nn.Module):
  """CREPS / CREPS-NB generator. See the module docstring."""
  resolution: int = 256
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  channel_base: int = 65536
  channel_max: int = 1024
  rank: int = 8
  biline_channels: int = 32
  bandwidth: float = 10.0
  fc_clamp: Optional[float] = 256.0
  refine_clamp: Optional[float] = 256.0    # the official refinement blocks hard-wire 256
  decoder_widths: Sequence[int] = (64, 128, 64, 32)
  refine_channels: Sequence[int] = (128, 64)
  biline: bool = True
  coord_convention: str = "linspace"
  # Pixels per tile of the per-pixel half (`compose`): 0 = the whole batch in
  # one pass; None = AUTO_COMPOSE_TILE_PIXELS on the CPU backend, 0 elsewhere.
  compose_tile_pixels: Optional[int] = None
  dtype: layers.Dtype = jnp.float32

  # Any pixel depends only on its own (row, column) coordinates.
  pixel_independent = True
  coord_range = (0.0, 1.0)

  @property
  def block_resolutions(self):
    return [2 ** i for i in range(2, int(np.log2(self.resolution)) + 1)]

  @property
  def num_ws(self):
    return 2 * len(self.block_resolutions) + 1

  def block_channels(self, res):
    return min(self.channel_base // res, self.channel_max)

  def setup(self):
    if self.resolution < 8 or self.resolution & (self.resolution - 1):
      raise ValueError(f"CREPS resolution must be a power of two >= 8, got {self.resolution}")
    self.mapping_net = mapping.MappingNetwork(
        z_dim=self.z_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_layers, name="mapping")
    c4 = self.block_channels(4)
    if self.biline:
      self.input = embeddings.FourierLineInput(c4, self.rank, self.bandwidth,
                                               dtype=self.dtype, name="input")
    else:
      self.input = embeddings.FourierGridInput(c4, self.bandwidth,
                                               dtype=self.dtype, name="input")
    self.blocks = [
        SynthesisBlock(self.block_channels(res), self.biline_channels,
                       has_fc0=res > 4, has_tores=res > 4, clamp=self.fc_clamp,
                       dtype=self.dtype, name=f"b{res}")
        for res in self.block_resolutions]
    if self.biline:
      self.decoders = [
          layers.MLP(tuple(self.decoder_widths[:-1]) + (self.biline_channels,),
                     dtype=self.dtype, name=f"decoder_{res}")
          for res in self.block_resolutions[2:]]
      self.decoder_last = layers.MLP(
          tuple(self.decoder_widths[:-1]) + (self.biline_channels,),
          dtype=self.dtype, name="decoder_last")
    self.decoder_img = layers.EqualDense(3, dtype=self.dtype, name="decoder_img")
    self.refine = [
        SynthesisBlock(ch, 3, clamp=self.refine_clamp, dtype=self.dtype, name=f"refine{i}")
        for i, ch in enumerate(self.refine_channels)]

  # --- the generator interface (mapping, __call__: interface.GeneratorInterface)

  def synthesis(self, ws, rows=None, cols=None, height=None, width=None):
    """ws [B, num_ws, w_dim], rows [H], cols [W] -> images [B, H, W, 3]."""
    rows = self.default_coords(height or self.resolution) if rows is None else rows
    cols = self.default_coords(width or self.resolution) if cols is None else cols
    if not self.biline:
      return self._synthesis_dense(ws, rows, cols)
    row_feats, col_feats = self.line_features(ws, rows, cols)
    return self.compose(ws, row_feats, col_feats)

  # --- CREPS's two halves: per-line features, then per-pixel composition ----

  def line_features(self, ws, rows, cols):
    """ws, rows [H], cols [W] -> accumulated bi-lines after each block b8..bR.

    Returns (row_feats [L, B, H, rank, 32], col_feats [L, B, W, rank, 32]),
    L = n_blocks - 1. Rows and columns share one pass through the blocks.
    """
    h = rows.shape[0]
    x = jnp.concatenate([self.input(rows, ws[:, 0], 0),
                         self.input(cols, ws[:, 0], 1)], axis=1)  # [B, H+W, rank, C]
    accumulated, outs = None, []
    for k, block in enumerate(self.blocks):
      x, y = block(x, *self._block_ws(ws, k))
      if y is not None:
        accumulated = y if accumulated is None else accumulated + y
        outs.append(accumulated)
    feats = jnp.stack(outs)                                       # [L, B, H+W, rank, 32]
    return feats[:, :, :h], feats[:, :, h:]

  def compose(self, ws, row_feats, col_feats):
    """Thick bi-line composition, decoder fusion, to-image and refinement.

    row_feats [L, B, H, rank, 32], col_feats [L, B, W, rank, 32] -> [B, H, W, 3].
    Runs in tiles of rows where `compose_tile_pixels` asks for it (see there).
    """
    tile_rows = self._compose_tile_rows(row_feats.shape[1], row_feats.shape[2],
                                        col_feats.shape[2])
    if tile_rows is None:
      return self._compose_once(ws, row_feats, col_feats)
    return _compose_in_row_tiles(self.clone(parent=None), self.variables, ws,
                                 row_feats, col_feats, tile_rows)

  def _compose_tile_rows(self, batch, height, width):
    """Rows per tile of `compose` (all samples), or None for one pass."""
    pixels = self.compose_tile_pixels
    if pixels is None:
      pixels = AUTO_COMPOSE_TILE_PIXELS if jax.default_backend() == "cpu" else 0
    if not pixels or batch * height * width <= pixels or self.is_initializing():
      return None
    return min(height, max(1, pixels // (batch * width)))

  def _compose_once(self, ws, row_feats, col_feats):
    """`compose` in one pass (arguments as there, or tuples of their L levels)."""
    feature = None
    for l in range(len(row_feats)):
      composed = thick_biline(row_feats[l], col_feats[l])
      feature = composed if l == 0 else self.decoders[l - 1](feature) + composed
    feature = self.decoder_last(feature)
    return self._to_image(ws, feature)

  def compose_pixels(self, ws, row_feats, col_feats):
    """`compose` for P pixels with their own (row, column) coordinates, in one pass.

    row_feats, col_feats [L, B, P, rank, 32]: pixel p's row line (at its row
    coordinate) and column line (at its column coordinate), from `line_features`
    on the flattened per-pixel coordinate maps -> rgb [B, P, 3]. Pixel p equals
    `compose` at (h, w) when its lines are row line h and column line w; used
    for rotations and distortions (gen_synth.anyscale).
    """
    feature = None
    for l in range(row_feats.shape[0]):
      composed = 0.5 * jnp.einsum("bprc,bprc->bpc", row_feats[l], col_feats[l])
      feature = composed if l == 0 else self.decoders[l - 1](feature) + composed
    return self._to_image(ws, self.decoder_last(feature))

  def _synthesis_dense(self, ws, rows, cols):
    x = self.input(rows, cols, ws[:, 0])                          # [B, H, W, C]
    accumulated = None
    for k, block in enumerate(self.blocks):
      x, y = block(x, *self._block_ws(ws, k))
      if y is not None:
        accumulated = y if accumulated is None else accumulated + y
    return self._to_image(ws, accumulated)

  def _to_image(self, ws, feature):
    """feature [B, H, W, 32] -> rgb [B, H, W, 3] (decoder_img + refinement skips)."""
    img = self.decoder_img(feature)
    w_last = ws[:, -1]
    x = feature
    for block in self.refine:
      x, y = block(x, w_last, w_last, w_last)
      img = img + y
    return img.astype(jnp.float32)

  def _block_ws(self, ws, k):
    """w for (fc0, fc1, to-bi-line) of block k, as the official code assigns them."""
    if k == 0:
      return None, ws[:, 1], ws[:, 2]
    return ws[:, 2 * k - 1], ws[:, 2 * k], ws[:, 2 * k + 1]
