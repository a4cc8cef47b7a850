"""Coordinate inputs: Fourier features on lines (CREPS) and on 2-D grids (CREPS-NB)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_synth.models import layers


def fourier_frequencies_init(key, shape, bandwidth):
  """Fixed (non-trainable) frequencies ~ N(0, 1) * bandwidth."""
  return jax.random.normal(key, shape, jnp.float32) * bandwidth


class FourierLineInput(nn.Module):
  """CREPS SynthesisInput on one line (the rows or the columns).

  coords [n] (same for every sample), w [B, w_dim] -> [B, n, rank, C].

  Channel c < C/2 is sin(2 pi x f[c, r]), channel c + C/2 the cos of the same
  frequency. The frequencies [C/2, rank] (collection 'fixed') are shared by the
  row and column lines; the learned amplitude [2, rank, C] (init N(0, 1)) times
  a per-sample affine of w (2*rank*C outputs, bias 1), divided by sqrt(C),
  makes them differ: `line` 0 picks the row half, 1 the column half.
  """
  channels: int
  rank: int = 8
  bandwidth: float = 10.0
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, coords, w, line: int):
    c, r = self.channels, self.rank
    freqs = self.variable(
        "fixed", "freqs",
        lambda: fourier_frequencies_init(self.make_rng("params"), (c // 2, r),
                                         self.bandwidth)).value
    # Official layout of the amplitude / affine output: [C, 2 * rank] with the
    # row entries first; kept as [C, 2, rank] so `line` selects one half.
    amplitude = self.param("amplitude", nn.initializers.normal(1.0), (c, 2, r))
    styles = layers.EqualDense(c * 2 * r, bias_init=1.0, name="affine")(w)
    styles = styles.reshape(w.shape[0], c, 2, r)[:, :, line]   # [B, C, rank]
    phase = 2 * np.pi * coords[:, None, None] * freqs[None]      # [n, C/2, rank]
    feats = jnp.concatenate([jnp.sin(phase), jnp.sin(phase + np.pi / 2)], axis=1)
    gain = (amplitude[None, :, line] * styles) / np.sqrt(c)     # [B, C, rank]
    x = feats[None] * gain[:, None]                              # [B, n, C, rank]
    return jnp.swapaxes(x, -1, -2).astype(self.dtype)            # [B, n, rank, C]


class FourierGridInput(nn.Module):
  """Dense 2-D Fourier input of CREPS-NB.

  rows [H], cols [W], w [B, w_dim] -> [B, H, W, C]: sin/cos of
  2 pi (f_y y + f_x x) with fixed frequencies [C/2, 2] (collection 'fixed'),
  scaled by a learned amplitude [C] times an affine of w (bias 1), / sqrt(C).
  """
  channels: int
  bandwidth: float = 10.0
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, rows, cols, w):
    c = self.channels
    freqs = self.variable(
        "fixed", "freqs",
        lambda: fourier_frequencies_init(self.make_rng("params"), (c // 2, 2),
                                         self.bandwidth)).value
    amplitude = self.param("amplitude", nn.initializers.normal(1.0), (c,))
    styles = layers.EqualDense(c, bias_init=1.0, name="affine")(w)  # [B, C]
    phase = 2 * np.pi * (rows[:, None, None] * freqs[:, 0]
                         + cols[None, :, None] * freqs[:, 1])       # [H, W, C/2]
    feats = jnp.concatenate([jnp.sin(phase), jnp.sin(phase + np.pi / 2)], axis=-1)
    gain = amplitude * styles / np.sqrt(c)                          # [B, C]
    return (feats[None] * gain[:, None, None]).astype(self.dtype)
