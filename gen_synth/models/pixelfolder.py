"""PixelFolder: progressive pixel synthesis with pixel folding (He et al., ECCV 2022).

Structure of the official generator (BlingHe/PixelFolder
`model/GeneratorPixelFolder.py`, `model/blocks.py`; see
../shared/reference/official_architecture_facts.md), channels-last. At 256:

  z -> mapping -> ws [B, 13, w_dim]  (n_latent = 2 * 2 * num_stages + 1)
  num_stages = log2(R) // 2 - 1 stages, each 4x wider: 4 -> 16, 16 -> 64, 64 -> 256
  stage s at unfolded resolution U (folded F = U / 4):
    emb = sin(LFF(x, y))                          [B, U, U, C(U)]   (Fourier features)
    stage 0: emb = ConvLayer(concat(emb, const))  [B, U, U, C(U)]   (learned constant)
    e = fold(fold(ConvLayer(emb)))                [B, F, F, C(F)]   (to C(F)/16, then 2 folds)
    stage > 0: e = ConvLayer(concat(e, h))        (merge with the previous stage's output h)
    2 x [StyledConv 3x3 -> unfold -> StyledConv 3x3 -> ToRGB (+ FIR-upsampled skip)]
  output: the last skip, [B, R, R, 3], no tanh.

Widths C(r) = min(channel_base / r, channel_max) (official table with
channel_multiplier 2: 512 up to 64, 256 at 128, 128 at 256). Conv k (0..11)
uses ws[k]; the ToRGB after fold step j (0..5) uses ws[2 j + 2], the w of the
next step's first conv.

Pixel folding is a parameter-free reshape with the official channel order
(the sub-pixel offset is the major index, unlike pixel_unshuffle):
  fold:   x[b, 2i + dy, 2j + dx, c] -> y[b, i, j, (2 dy + dx) C + c]
  unfold: its exact inverse.

PixelFolder is not pixel-independent (3x3 convolutions and folds mix
neighbouring pixels) and its learned constant has a fixed size, so it renders
only its training resolution on its training grid.

Left out on purpose (built but never run by the official code): stage 0's
`conv_merge`, 524,800 parameters at 256.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_synth.models import conv_layers
from gen_synth.models import interface
from gen_synth.models import layers
from gen_synth.models import mapping

FOLD = 2             # fold factor (2x2 patches)
FOLDS_PER_STAGE = 2  # two folds / unfolds per stage


def fold(x, factor: int = FOLD):
  """Space-to-depth, official order: [B, H, W, C] -> [B, H/f, W/f, f*f*C].

  Pixel (f i + dy, f j + dx) channel c goes to (i, j) channel (f dy + dx) C + c.
  """
  b, h, w, c = x.shape
  x = x.reshape(b, h // factor, factor, w // factor, factor, c)   # [b, i, dy, j, dx, c]
  x = x.transpose(0, 1, 3, 2, 4, 5)                               # [b, i, j, dy, dx, c]
  return x.reshape(b, h // factor, w // factor, factor * factor * c)


def unfold(x, factor: int = FOLD):
  """Depth-to-space, the inverse of `fold`: [B, H, W, f*f*C] -> [B, f H, f W, C]."""
  b, h, w, cf = x.shape
  c = cf // (factor * factor)
  x = x.reshape(b, h, w, factor, factor, c)                       # [b, i, j, dy, dx, c]
  x = x.transpose(0, 1, 3, 2, 4, 5)                               # [b, i, dy, j, dx, c]
  return x.reshape(b, h * factor, w * factor, c)


def _uniform(limit):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -limit, limit)


class LFF(nn.Module):
  """Learned Fourier features (official `LFF`): rows [H], cols [W] -> [H, W, C].

  sin(x W_x + y W_y + b): a plain (not equalized) 1x1 conv from the two
  coordinate channels (x = column coordinate first, y = row coordinate
  second), weight ~ U(+-sqrt(9 / 2)), bias ~ U(+-1 / sqrt(2)) (PyTorch's
  default for fan-in 2). The result does not depend on the sample.
  """
  features: int

  @nn.compact
  def __call__(self, rows, cols):
    kernel = self.param("kernel", _uniform(np.sqrt(9 / 2)), (2, self.features))
    bias = self.param("bias", _uniform(1 / np.sqrt(2)), (self.features,))
    grid = jnp.stack(jnp.broadcast_arrays(cols[None, :], rows[:, None]), axis=-1)  # [H, W, 2]
    return jnp.sin(jnp.einsum("hwk,kc->hwc", grid.astype(jnp.float32), kernel) + bias)


class Stage(nn.Module):
  """One PixelFolder stage: PosFold, two fold steps, their ToRGBs.

  emb [H_u, W_u, C_u] (LFF output at the unfolded resolution),
  hidden [B, H_f, W_f, C_f] (the previous stage's output; stage 0: the learned
  constant [1, H_u, W_u, C_u]), ws [B, 5, w_dim], skip [B, H_f, W_f, 3] | None
  -> (out [B, H_u, W_u, C_out], skip [B, H_u, W_u, 3]).
  """
  first: bool
  folded_channels: int
  step_channels: tuple        # out channels of the two fold steps
  noise_mode: str = "random"
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, emb, hidden, ws, skip):
    conv1x1 = lambda n, name: conv_layers.EqualConv2d(
        n, 1, use_bias=True, activation="lrelu", dtype=self.dtype, name=name)
    batch = ws.shape[0]
    # Up to the folds nothing depends on the sample (Fourier features, the
    # learned constant): computed once, then broadcast to the batch. Broadcast
    # first, XLA:CPU evaluated the sines once per sample (PixelFolder-256,
    # batch 4: 123 ms of the call).
    emb = emb[None].astype(self.dtype)                              # [1, H_u, W_u, C_u]
    area_ratio = FOLD ** (2 * FOLDS_PER_STAGE)                      # unfolded / folded area
    if self.first:
      const = hidden.astype(self.dtype)                             # [1, H_u, W_u, C_u]
      emb = conv1x1(emb.shape[-1], "posfold_conv0")(jnp.concatenate([emb, const], axis=-1))
    x = conv1x1(self.folded_channels // area_ratio, "posfold_conv1")(emb)   # [1, H_u, W_u, C_f / 16]
    for _ in range(FOLDS_PER_STAGE):
      x = fold(x)                                                   # -> [1, H_f, W_f, C_f]
    x = jnp.broadcast_to(x, (batch,) + x.shape[1:])                 # [B, H_f, W_f, C_f]
    if not self.first:
      x = conv1x1(self.folded_channels, "posfold_merge")(
          jnp.concatenate([x, hidden.astype(self.dtype)], axis=-1))
    for step, c_out in enumerate(self.step_channels):
      styled = lambda n, i: conv_layers.StyledConv(
          n, 3, noise_mode=self.noise_mode, dtype=self.dtype, name=f"conv{i}")
      x = styled(c_out, 2 * step)(x, ws[:, 2 * step])
      x = unfold(x)                                                 # [B, 2H, 2W, C_out / 4]
      x = styled(c_out, 2 * step + 1)(x, ws[:, 2 * step + 1])
      skip = conv_layers.ToRGB(dtype=self.dtype, name=f"to_rgb{step}")(
          x, ws[:, 2 * step + 2], skip)
    return x, skip


class PixelFolder(interface.GeneratorInterface, nn.Module):
  """PixelFolder generator. See the module docstring."""
  resolution: int = 256
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  channel_base: int = 32768
  channel_max: int = 512
  noise_mode: str = "random"
  coord_convention: str = "linspace"
  dtype: layers.Dtype = jnp.float32

  pixel_independent = False
  not_pixel_independent_because = "3x3 convolutions and pixel folds mix neighbouring pixels"
  coord_range = (-1.0, 1.0)

  # --- structure ------------------------------------------------------------

  @property
  def num_stages(self):
    return int(np.log2(self.resolution)) // FOLDS_PER_STAGE - 1

  @property
  def num_ws(self):
    return 2 * FOLDS_PER_STAGE * self.num_stages + 1

  def stage_resolutions(self):
    """[(folded, unfolded)] per stage, e.g. [(4, 16), (16, 64), (64, 256)] at 256."""
    log = int(np.log2(self.resolution))
    out = []
    for s in range(self.num_stages):
      unfolded = 2 ** (log - (self.num_stages - s - 1) * FOLDS_PER_STAGE)
      out.append((unfolded // FOLD ** FOLDS_PER_STAGE, unfolded))
    return out

  def channels(self, res):
    return min(self.channel_base // res, self.channel_max)

  def setup(self):
    r = self.resolution
    if r < 16 or r & (r - 1):
      raise ValueError(f"PixelFolder resolution must be a power of two >= 16, got {r}")
    self.mapping_net = mapping.MappingNetwork(
        z_dim=self.z_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_layers, name="mapping")
    stages = self.stage_resolutions()
    first_unfolded = stages[0][1]
    self.const = self.param("const", nn.initializers.normal(1.0),
                            (first_unfolded, first_unfolded, self.channels(first_unfolded)))
    self.lffs = [LFF(self.channels(u), name=f"lff{s}") for s, (_, u) in enumerate(stages)]
    self.stages = [
        Stage(first=s == 0, folded_channels=self.channels(f),
              step_channels=tuple(self.channels(f * FOLD ** (k + 1))
                                  for k in range(FOLDS_PER_STAGE)),
              noise_mode=self.noise_mode, dtype=self.dtype, name=f"stage{s}")
        for s, (f, _) in enumerate(stages)]

  # --- the generator interface (mapping, __call__: interface.GeneratorInterface)

  def check_size(self, height, width):
    r = self.resolution
    if (height, width) != (r, r):
      raise ValueError(
          f"PixelFolder-{r} can only produce {r}x{r} images (its learned constant input is "
          f"fixed at {self.stage_resolutions()[0][1]}x{self.stage_resolutions()[0][1]}); "
          f"got {height}x{width}")

  def synthesis(self, ws, rows=None, cols=None, height=None, width=None):
    """ws [B, num_ws, w_dim] -> images [B, R, R, 3].

    Only the training resolution R exists. `rows` / `cols`, if given, must
    have R entries; they feed the last stage's Fourier features (the earlier
    stages use their own default grids). `gen_synth.sampling` passes only the
    default coordinates, since it refuses coordinate transforms for models
    that are not pixel-independent.
    """
    height = rows.shape[0] if rows is not None else (height or self.resolution)
    width = cols.shape[0] if cols is not None else (width or self.resolution)
    self.check_size(height, width)
    x, skip = self.const[None], None
    last = self.num_stages - 1
    for s, (stage, (_, u)) in enumerate(zip(self.stages, self.stage_resolutions())):
      r = rows if (s == last and rows is not None) else self.default_coords(u)
      c = cols if (s == last and cols is not None) else self.default_coords(u)
      emb = self.lffs[s](r, c)                                      # [U, U, C(U)]
      x, skip = stage(emb, x, ws[:, 4 * s:4 * s + 5], skip)
    return skip.astype(jnp.float32)
