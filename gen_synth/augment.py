"""StyleGAN2-ADA augmentation pipeline ("Training GANs with Limited Data").

A pure-JAX reimplementation of the official `training/augment.py` AugmentPipe
of StyleGAN2-ADA-pytorch (which CREPS uses unchanged, with the 'bgc' set of
transforms) and of the adaptive-p (ADA) rule of its training loop. Written
from the math; only the constants (wavelet taps, defaults) are the official
ones.

Everything is a pure function: explicit PRNG keys, no state. Images are NHWC
float arrays [B, H, W, C] (C = 3 or 1), values in about [-1, 1]. The overall
augmentation probability `p` is a (traced) float scalar, so it can live in a
train state and change every step without recompiling; which transforms exist
is static (an `AugmentSpec`, or a preset name of `PRESETS`).

    augment(key, images, p, 'bgc') -> images            [B, H, W, C]
      = apply_augment(images, sample_params(key, p, spec, images.shape))

`sample_params` draws the per-image parameters (a dict of arrays, one entry per
enabled transform, see its docstring); `apply_augment` executes them, in the
official order:

  1. pixel blitting (x-flip, 90-degree rotations, integer translation) and the
     general geometric transforms (isotropic scaling, pre-rotation,
     anisotropic scaling, post-rotation, fractional translation), composed into
     one inverse 3x3 matrix per image and executed by a single resampling:
     reflect padding, 2x upsampling with the sym6 wavelet, bilinear sampling
     (grid_sample, align_corners=False, zeros outside), 2x downsampling;
  2. colour (brightness, contrast, luma flip, hue rotation, saturation),
     composed into one 4x4 matrix per image;
  3. image-space filtering (4 frequency bands of the sym2 filter bank);
  4. corruptions: additive RGB noise, cutout.

Deviations from the official pipeline (all documented where they happen):
  * The official pads by a data-dependent amount (the batch-wide margin that
    the transformed corners need). Shapes must be static under jit, so the
    image is reflect-padded by the largest amount the official code can use
    (H-1, W-1), and the parts outside the official margin are zeroed (before
    and after upsampling) so that the result equals the official one.
  * An image whose composed matrix is exactly the identity (not augmented this
    time) is returned unchanged; the official code still resamples it, which
    changes it by ~1e-6 (the wavelet round trip). Same for an identity
    image-space filter. So p = 0 returns the input exactly.
  * In the official pipeline the blits go through the same filtered
    resampling, which is NOT exact for x-flips and 90-degree rotations (sym6 is
    not symmetric: the mirrored image is filtered with the mirrored filter;
    measured on 32x32 images: max error ~0.7, mean ~0.12 on N(0, 1) noise;
    max ~0.13, mean ~0.02 on smooth images). `AugmentSpec(exact_blit=True)` executes the blits as exact
    pixel gathers (reflect padding for the translation) before the general
    geometric transforms instead; the default follows the official code.
  * Random numbers come from `jax.random`, so draws differ from torch's; the
    distributions are the official ones.
  * The official image-space filter needs H, W > 21 (torch reflect padding);
    here smaller images use numpy-style repeated reflection.

The ADA rule is `ada_update` (see its docstring for the official semantics).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Mapping, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST

# Low-pass decomposition taps of the Symlet wavelets (PyWavelets' `dec_lo`).
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036,
        -0.007800708325034148)

# Expected power of the 4 image-space filter bands (1/f spectrum).
_IMGFILTER_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)

_BLIT = ('xflip', 'rotate90', 'xint')
_GEOM = ('scale', 'rotate_pre', 'aniso', 'rotate_post', 'xfrac')
_COLOR = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')


# --------------------------------------------------------------------------
# Specs and presets.


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """Probability multipliers and magnitudes; the official AugmentPipe kwargs.

  A transform with multiplier 0 is absent (static); one with multiplier m is
  applied to each image independently with probability m * p. Defaults of the
  magnitudes are the official ones. `exact_blit` is not official (see the
  module docstring).
  """
  # Pixel blitting.
  xflip: float = 0.
  rotate90: float = 0.
  xint: float = 0.
  xint_max: float = 0.125  # Range of integer translation, relative to size.
  # General geometric transformations.
  scale: float = 0.
  rotate: float = 0.
  aniso: float = 0.
  xfrac: float = 0.
  scale_std: float = 0.2  # log2 std of isotropic scaling.
  rotate_max: float = 1.  # Range of arbitrary rotation, 1 = full circle.
  aniso_std: float = 0.2  # log2 std of anisotropic scaling.
  xfrac_std: float = 0.125  # Std of fractional translation, relative to size.
  # Colour transformations.
  brightness: float = 0.
  contrast: float = 0.
  lumaflip: float = 0.
  hue: float = 0.
  saturation: float = 0.
  brightness_std: float = 0.2
  contrast_std: float = 0.5  # log2 std.
  hue_max: float = 1.  # Range of hue rotation, 1 = full circle.
  saturation_std: float = 1.  # log2 std.
  # Image-space filtering.
  imgfilter: float = 0.
  imgfilter_bands: Tuple[float, float, float, float] = (1., 1., 1., 1.)
  imgfilter_std: float = 1.  # log2 std of the band amplification.
  # Image-space corruptions.
  noise: float = 0.
  cutout: float = 0.
  noise_std: float = 0.1
  cutout_size: float = 0.5  # Side of the cutout square, relative to size.
  # Not official: execute the blits as exact pixel gathers.
  exact_blit: bool = False


_B = dict(xflip=1, rotate90=1, xint=1)
_G = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_C = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

# The official `augpipe_specs` of StyleGAN2-ADA's train.py (--augpipe); CREPS's
# train.py always uses 'bgc'.
PRESETS: Dict[str, AugmentSpec] = {
    'blit': AugmentSpec(**_B),
    'geom': AugmentSpec(**_G),
    'color': AugmentSpec(**_C),
    'filter': AugmentSpec(imgfilter=1),
    'noise': AugmentSpec(noise=1),
    'cutout': AugmentSpec(cutout=1),
    'bg': AugmentSpec(**_B, **_G),
    'bgc': AugmentSpec(**_B, **_G, **_C),
    'bgcf': AugmentSpec(**_B, **_G, **_C, imgfilter=1),
    'bgcfn': AugmentSpec(**_B, **_G, **_C, imgfilter=1, noise=1),
    'bgcfnc': AugmentSpec(**_B, **_G, **_C, imgfilter=1, noise=1, cutout=1),
}


def get_spec(spec: Union[str, AugmentSpec, Mapping[str, float]]) -> AugmentSpec:
  """An AugmentSpec from a preset name, a spec, or a dict of AugmentSpec fields."""
  if isinstance(spec, AugmentSpec):
    return spec
  if isinstance(spec, str):
    if spec not in PRESETS:
      raise ValueError(f'unknown augmentation preset {spec!r}; known: {sorted(PRESETS)}')
    return PRESETS[spec]
  if isinstance(spec, Mapping):
    unknown = set(spec) - {f.name for f in dataclasses.fields(AugmentSpec)}
    if unknown:
      raise ValueError(f'unknown augmentation fields {sorted(unknown)}')
    spec = dict(spec)
    if 'imgfilter_bands' in spec:
      spec['imgfilter_bands'] = tuple(float(b) for b in spec['imgfilter_bands'])
    return AugmentSpec(**spec)
  raise TypeError(f'spec must be a preset name, an AugmentSpec or a dict, not {type(spec)}')


# --------------------------------------------------------------------------
# Parameter sampling.

# Fixed column layout of the per-image draws (uniforms, then normals), so that
# enabling one transform does not change the draws of another. One random
# table (not one draw per transform) keeps the threefry code, and so the
# compile time, small.


def _layout(sizes):
  cols, start = {}, 0
  for name, k in sizes:
    cols[name] = slice(start, start + k)
    start += k
  return cols, start


_U_COLS, _NUM_U = _layout([
    ('xflip', 2), ('rotate90', 2), ('xint', 3), ('scale', 1), ('rotate_pre', 2), ('aniso', 1),
    ('rotate_post', 2), ('xfrac', 1), ('brightness', 1), ('contrast', 1), ('lumaflip', 2),
    ('hue', 2), ('saturation', 1), ('imgfilter', 4), ('noise', 1), ('cutout', 3)])
_N_COLS, _NUM_N = _layout([
    ('scale', 1), ('aniso', 1), ('xfrac', 2), ('brightness', 1), ('contrast', 1),
    ('saturation', 1), ('imgfilter', 4), ('noise', 1)])


def sample_params(key: Array, p, spec, shape) -> Dict[str, Array]:
  """Per-image augmentation parameters, drawn as the official AugmentPipe does.

  Args:
    key: PRNG key.
    p: overall augmentation probability, float scalar (may be traced).
    spec: AugmentSpec, preset name or dict (static).
    shape: image shape (B, H, W, C), static.

  Returns a dict with one entry per enabled transform (absent = identity); the
  value each image gets when it is not augmented is the identity value:
    xflip [B]        0/1; with prob. xflip*p a fair coin (so P(flip) = p/2).
    rotate90 [B]     k in {0,1,2,3} (rotation by k*90 deg, = np.rot90(k) on
                     the (H, W) axes); with prob. rotate90*p uniform.
    xint [B, 2]      integer (tx, ty) in pixels, content moves right/down;
                     round(U(-xint_max, xint_max) * (W, H)), prob. xint*p.
    scale [B]        2^N(0, scale_std), prob. scale*p.
    rotate_pre [B]   angle U(-pi, pi)*rotate_max in radians (the inverse
    rotate_post [B]  matrix is rotate2d(theta), so the content turns
                     counter-clockwise on screen for theta > 0, like
                     rotate90), each with prob. 1 - sqrt(1 - rotate*p), so
                     that P(pre or post) = rotate*p.
    aniso [B]        2^N(0, aniso_std) (x scaled by s, y by 1/s), prob. aniso*p.
    xfrac [B, 2]     N(0, xfrac_std) * (W, H) pixels, prob. xfrac*p.
    brightness [B]   additive N(0, brightness_std), prob. brightness*p.
    contrast [B]     2^N(0, contrast_std), prob. contrast*p.
    lumaflip [B]     0/1; with prob. lumaflip*p a fair coin.
    hue [B]          angle U(-pi, pi)*hue_max about the luma axis, prob. hue*p
                     (RGB only, as official).
    saturation [B]   2^N(0, saturation_std), prob. saturation*p (RGB only).
    imgfilter [B, 4] band gains g (product over bands i of the power-normalised
                     gain vectors, band i amplified by 2^N(0, imgfilter_std)
                     with prob. imgfilter*p*imgfilter_bands[i]).
    noise_sigma [B]  |N(0, 1)|*noise_std, prob. noise*p; with
    noise [B, H, W, C] the N(0, 1) field it scales.
    cutout_size [B]  cutout_size, prob. cutout*p, else 0; with
    cutout_center [B, 2] U(0, 1)^2 (x, y), relative to the image size.
  """
  spec = get_spec(spec)
  batch, height, width, channels = shape
  p = jnp.asarray(p, jnp.float32)
  f32 = jnp.float32
  out = {}

  key_table, key_noise = jax.random.split(key)
  table = jax.random.uniform(key_table, (batch, _NUM_U + _NUM_N), f32)
  table_u = table[:, :_NUM_U]
  # Normals by the inverse CDF of the same uniform draw (as jax.random.normal).
  lo = np.nextafter(np.float32(-1), np.float32(0))
  table_n = np.sqrt(2).astype(np.float32) * jax.lax.erf_inv(
      jnp.maximum(table[:, _NUM_U:] * 2 - 1, lo))

  def u(name):  # [B, k] uniforms of `name`, in [0, 1).
    return table_u[:, _U_COLS[name]]

  def n(name):  # [B, k] standard normals of `name`.
    return table_n[:, _N_COLS[name]]

  def on(draw, mult):
    """Applied with probability mult * p (official: rand < mult * p)."""
    return draw < mult * p

  if spec.xflip > 0:
    uu = u('xflip')
    out['xflip'] = jnp.where(on(uu[:, 1], spec.xflip), jnp.floor(uu[:, 0] * 2), 0.)
  if spec.rotate90 > 0:
    uu = u('rotate90')
    out['rotate90'] = jnp.where(on(uu[:, 1], spec.rotate90), jnp.floor(uu[:, 0] * 4), 0.)
  if spec.xint > 0:
    uu = u('xint')
    t = (uu[:, :2] * 2 - 1) * spec.xint_max
    t = jnp.where(on(uu[:, 2:], spec.xint), t, 0.)
    out['xint'] = jnp.round(t * jnp.array([width, height], f32))
  if spec.scale > 0:
    out['scale'] = jnp.where(on(u('scale')[:, 0], spec.scale),
                             jnp.exp2(n('scale')[:, 0] * spec.scale_std), 1.)
  if spec.rotate > 0:
    p_rot = 1 - jnp.sqrt(jnp.clip(1 - spec.rotate * p, 0, 1))  # P(pre or post) = rotate*p.
    for name in ('rotate_pre', 'rotate_post'):
      uu = u(name)
      theta = (uu[:, 0] * 2 - 1) * np.pi * spec.rotate_max
      out[name] = jnp.where(uu[:, 1] < p_rot, theta, 0.)
  if spec.aniso > 0:
    out['aniso'] = jnp.where(on(u('aniso')[:, 0], spec.aniso),
                             jnp.exp2(n('aniso')[:, 0] * spec.aniso_std), 1.)
  if spec.xfrac > 0:
    t = jnp.where(on(u('xfrac'), spec.xfrac), n('xfrac') * spec.xfrac_std, 0.)
    out['xfrac'] = t * jnp.array([width, height], f32)
  if spec.brightness > 0:
    out['brightness'] = jnp.where(on(u('brightness')[:, 0], spec.brightness),
                                  n('brightness')[:, 0] * spec.brightness_std, 0.)
  if spec.contrast > 0:
    out['contrast'] = jnp.where(on(u('contrast')[:, 0], spec.contrast),
                                jnp.exp2(n('contrast')[:, 0] * spec.contrast_std), 1.)
  if spec.lumaflip > 0:
    uu = u('lumaflip')
    out['lumaflip'] = jnp.where(on(uu[:, 1], spec.lumaflip), jnp.floor(uu[:, 0] * 2), 0.)
  if spec.hue > 0 and channels > 1:
    uu = u('hue')
    theta = (uu[:, 0] * 2 - 1) * np.pi * spec.hue_max
    out['hue'] = jnp.where(on(uu[:, 1], spec.hue), theta, 0.)
  if spec.saturation > 0 and channels > 1:
    out['saturation'] = jnp.where(on(u('saturation')[:, 0], spec.saturation),
                                  jnp.exp2(n('saturation')[:, 0] * spec.saturation_std), 1.)
  if spec.imgfilter > 0:
    bands = spec.imgfilter_bands
    if len(bands) != 4:
      raise ValueError(f'imgfilter_bands must have 4 entries, got {bands}')
    strength = jnp.asarray(bands, f32)
    t = jnp.exp2(n('imgfilter') * spec.imgfilter_std)
    t = jnp.where(u('imgfilter') < spec.imgfilter * p * strength, t, 1.)
    out['imgfilter'] = imgfilter_gains(t)
  if spec.noise > 0:
    sigma = jnp.abs(n('noise')[:, 0]) * spec.noise_std
    out['noise_sigma'] = jnp.where(on(u('noise')[:, 0], spec.noise), sigma, 0.)
    out['noise'] = jax.random.normal(key_noise, (batch, height, width, channels), f32)
  if spec.cutout > 0:
    uu = u('cutout')
    out['cutout_size'] = jnp.where(on(uu[:, 0], spec.cutout), jnp.float32(spec.cutout_size), 0.)
    out['cutout_center'] = uu[:, 1:]
  return out


def imgfilter_gains(t: Array) -> Array:
  """Band gains g [B, 4] from the per-band amplifications t [B, 4] (1 = off).

  Official: for each band i in turn, the vector (1, .., t_i, .., 1) is divided
  by its expected-power norm sqrt(sum_j P_j t_j^2) (P = (10, 1, 1, 1) / 13) and
  multiplied into g. Written as sqrt(1 + P_i (t_i^2 - 1)) (the same, since
  sum P = 1) so that t_i = 1 gives exactly 1.
  """
  g = jnp.ones_like(t)
  for i, power in enumerate(_IMGFILTER_POWER):
    t_i = t[:, i:i + 1]
    vec = jnp.where(jnp.arange(t.shape[1]) == i, t_i, 1.)
    g = g * vec / jnp.sqrt(1 + power * (jnp.square(t_i) - 1))
  return g


# --------------------------------------------------------------------------
# Matrices (homogeneous; [B, 3, 3] geometric, [B, 4, 4] colour).


def _matmul(a, b):
  return jnp.einsum('bij,bjk->bik', a, b, precision=_HIGHEST)


def _mat3(rows, batch):
  """[B, 3, 3] from a 3x3 nested list of scalars / [B] arrays."""
  return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (batch,))
                               for e in row], axis=-1) for row in rows], axis=-2)


def _translate2d(tx, ty, batch):
  return _mat3([[1, 0, tx], [0, 1, ty], [0, 0, 1]], batch)


def _scale2d(sx, sy, batch):
  return _mat3([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], batch)


def _rotate2d(cos, sin, batch):
  return _mat3([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], batch)


def blit_matrix(params: Mapping[str, Array], batch: int) -> Array:
  """Inverse transform [B, 3, 3] of the blits: output pixel -> input pixel.

  Centred pixel coordinates (origin at the image centre, x right, y down),
  composed as the official G_inv = G_inv @ T_inv for x-flip, rotate90, xint.
  The 90-degree rotation uses exact cos/sin (the official float32 cos(pi/2)
  is -4e-8 instead of 0).
  """
  g = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (batch, 3, 3))
  if 'xflip' in params:
    g = _matmul(g, _scale2d(1 - 2 * params['xflip'], 1., batch))
  if 'rotate90' in params:
    k = params['rotate90'].astype(jnp.int32) % 4
    cos = jnp.array([1., 0., -1., 0.])[k]
    sin = jnp.array([0., 1., 0., -1.])[k]
    g = _matmul(g, _rotate2d(cos, sin, batch))  # rotate2d_inv(-k pi/2).
  if 'xint' in params:
    g = _matmul(g, _translate2d(-params['xint'][:, 0], -params['xint'][:, 1], batch))
  return g


def geom_matrix(params: Mapping[str, Array], batch: int) -> Array:
  """Inverse transform [B, 3, 3] of the general geometric transforms.

  Official order: isotropic scale, pre-rotation, anisotropic scale,
  post-rotation, fractional translation, each right-multiplied as its inverse.
  """
  g = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (batch, 3, 3))
  if 'scale' in params:
    s = params['scale']
    g = _matmul(g, _scale2d(1 / s, 1 / s, batch))
  if 'rotate_pre' in params:
    t = params['rotate_pre']
    g = _matmul(g, _rotate2d(jnp.cos(t), jnp.sin(t), batch))  # rotate2d_inv(-theta).
  if 'aniso' in params:
    s = params['aniso']
    g = _matmul(g, _scale2d(1 / s, s, batch))
  if 'rotate_post' in params:
    t = params['rotate_post']
    g = _matmul(g, _rotate2d(jnp.cos(t), jnp.sin(t), batch))
  if 'xfrac' in params:
    g = _matmul(g, _translate2d(-params['xfrac'][:, 0], -params['xfrac'][:, 1], batch))
  return g


_LUMA = np.array([1., 1., 1., 0.]) / np.sqrt(3)  # Luma axis (homogeneous RGB).


def color_matrix(params: Mapping[str, Array], batch: int) -> Array:
  """Colour transform [B, 4, 4] (homogeneous RGB: C @ rgb_in -> rgb_out).

  Official order, each left-multiplied: brightness (translate by b), contrast
  (scale by c), luma flip (Householder reflection I - 2 v v^T about the luma
  axis v = (1,1,1)/sqrt 3), hue (rotation by theta about v), saturation
  (v v^T + s (I - v v^T), written I + (s - 1)(I - v v^T) so s = 1 is exact).
  """
  eye = jnp.eye(4, dtype=jnp.float32)
  c = jnp.broadcast_to(eye, (batch, 4, 4))
  v = jnp.asarray(_LUMA, jnp.float32)
  vv = jnp.outer(v, v)
  ones = jnp.ones((batch,), jnp.float32)
  zeros = jnp.zeros((batch,), jnp.float32)

  def mat4(rows):
    return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (batch,))
                                 for e in row], axis=-1) for row in rows], axis=-2)

  if 'brightness' in params:
    b = params['brightness']
    c = _matmul(mat4([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]), c)
  if 'contrast' in params:
    s = params['contrast']
    c = _matmul(mat4([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]]), c)
  if 'lumaflip' in params:
    i = params['lumaflip'][:, None, None]
    c = _matmul(eye - 2 * vv * i, c)
  if 'hue' in params:
    theta = params['hue']
    vx, vy, vz = (float(x) for x in _LUMA[:3])
    s, co = jnp.sin(theta), jnp.cos(theta)
    cc = 1 - co
    rot = mat4([[vx * vx * cc + co, vx * vy * cc - vz * s, vx * vz * cc + vy * s, zeros],
                [vy * vx * cc + vz * s, vy * vy * cc + co, vy * vz * cc - vx * s, zeros],
                [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + co, zeros],
                [zeros, zeros, zeros, ones]])
    c = _matmul(rot, c)
  if 'saturation' in params:
    s = params['saturation'][:, None, None]
    c = _matmul(eye + (s - 1) * (eye - vv), c)
  return c


# --------------------------------------------------------------------------
# Executing the transforms.


# The resampling filters run on planar images [N = B * C, H, W]: a correlation
# along H or W is then a sum of shifted (strided) slices whose inner loop is
# contiguous. Channels-last slices (C = 3 innermost) ran 2.5-5x slower on
# XLA:CPU, and depthwise / lhs-dilated convolutions (feature_group_count = C)
# ~50x slower (a [8, 192, 192, 3] 2x upsampling: ~1 s as a convolution).


def _to_planar(x: Array) -> Array:
  """[B, H, W, C] -> [B * C, H, W]."""
  b, h, w, c = x.shape
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(b * c, h, w)


def _from_planar(x: Array, channels: int) -> Array:
  """[B * C, H, W] -> [B, H, W, C]."""
  n, h, w = x.shape
  return jnp.transpose(x.reshape(n // channels, channels, h, w), (0, 2, 3, 1))


def _correlate_planar(x, taps, axis, *, dilation=1, stride=1, padding=(0, 0)):
  """1-D correlation of planar x [N, H, W] along axis 1 (H) or 2 (W).

  taps: [K] shared, or [K, N] one filter per plane. The semantics of
  `lax.conv_general_dilated` with one group per plane: dilation - 1 zeros
  inserted between samples, then `padding` (lo, hi), then the K-tap window
  every `stride` samples. A custom VJP makes the adjoint the same kind of
  correlation (flipped taps, dilation and stride swapped), so every derivative
  order (R1 differentiates through the augmentation twice) stays a fused
  elementwise loop. Its input is materialised first on CPU (`_materialize`).
  TPU/GPU: neutral or better (no grouped convolution; not measured there).
  """
  taps = jnp.asarray(taps, jnp.float32)
  return _correlate(x, taps, axis, dilation, stride, tuple(padding))


def _windows(x, taps, axis, dilation, stride, padding):
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (padding[0], padding[1], dilation - 1)
  u = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
  out = (u.shape[axis] - taps.shape[0]) // stride + 1
  return [jax.lax.slice_in_dim(u, j, j + (out - 1) * stride + 1, stride=stride, axis=axis)
          for j in range(taps.shape[0])]


def _tap(taps, j):
  return taps[j] if taps.ndim == 1 else taps[j][:, None, None]   # [] or [N, 1, 1]


def _materialize(x):
  """x, computed once and stored: a fusion barrier for XLA:CPU (decided when traced).

  Without it XLA:CPU fuses a producer into each of the K slices that read it
  and computes it K times (the bilinear gathers in front of the downsampling:
  6x the time of gathers + filter). It drops `lax.optimization_barrier` and
  fuses through it, but never across a conditional. Both branches return x
  (the first adds 0. so JAX keeps the conditional; it runs only when x's first
  element is NaN). Other backends get x unchanged: a GPU conditional reads its
  predicate on the host, and their fusion passes weigh duplication themselves.
  """
  if jax.default_backend() != 'cpu':
    return x
  return jax.lax.cond(jnp.isnan(x[(0,) * x.ndim]), lambda v: v + 0., lambda v: v, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _correlate(x, taps, axis, dilation, stride, padding):
  windows = _windows(_materialize(x), taps, axis, dilation, stride, padding)
  acc = windows[0] * _tap(taps, 0)
  for j in range(1, len(windows)):
    acc = acc + windows[j] * _tap(taps, j)
  return acc


def _correlate_fwd(x, taps, axis, dilation, stride, padding):
  return _correlate(x, taps, axis, dilation, stride, padding), (x, taps)


def _correlate_bwd(axis, dilation, stride, padding, residuals, g):
  """The adjoint: dilate g by `stride`, correlate with the flipped taps, keep every `dilation`-th."""
  x, taps = residuals
  k, n, out = taps.shape[0], x.shape[axis], g.shape[axis]
  lo = padding[0]
  x_bar = _correlate(g, taps[::-1], axis, stride, dilation,
                     (k - 1 - lo, (n - 1) * dilation - (out - 1) * stride + lo))
  windows = _windows(x, taps, axis, dilation, stride, padding)
  sum_axes = (0, 1, 2) if taps.ndim == 1 else (1, 2)
  taps_bar = jnp.stack([jnp.sum(w * g, axis=sum_axes) for w in windows]).astype(taps.dtype)
  return x_bar, taps_bar


_correlate.defvjp(_correlate_fwd, _correlate_bwd)


def _geom_taps() -> np.ndarray:
  f = np.asarray(SYM6, np.float32)
  return f / f.sum()  # Unit DC gain (official setup_filter normalisation).


def _upsample2x_planar(x: Array) -> Array:
  f = _geom_taps()
  taps = f[::-1] * 2  # Correlation with the flipped filter = convolution.
  pad = ((f.shape[0] + 1) // 2,) * 2  # (6, 5) + the trailing inserted zero.
  x = _correlate_planar(x, taps, 2, dilation=2, padding=pad)
  return _correlate_planar(x, taps, 1, dilation=2, padding=pad)


def _downsample2x_planar(x: Array, crop: int) -> Array:
  f = _geom_taps()
  x = x[:, crop:x.shape[1] - crop, crop:x.shape[2] - crop]
  x = _correlate_planar(x, f, 2, stride=2)
  return _correlate_planar(x, f, 1, stride=2)


def upsample2x(x: Array) -> Array:
  """[B, H, W, C] -> [B, 2H, 2W, C]: zero insertion + sym6 (official upsample2d).

  Per axis: zeros inserted after every sample, padding 6 before and 5 after,
  true convolution with the normalised taps times 2 (gain up^2 in 2-D).
  """
  return _from_planar(_upsample2x_planar(_to_planar(x)), x.shape[-1])


def downsample2x(x: Array, crop: int) -> Array:
  """[B, H, W, C] -> [B, (H - 2 crop - 10) / 2, ...]: sym6 + decimation.

  Official downsample2d(f, down=2, padding=-2 hz, flip_filter=True) with
  hz = 3, which crops crop = 2 hz - 5 = 1 per side: correlation (flipped
  convolution) with the normalised taps, keeping every other sample.
  """
  return _from_planar(_downsample2x_planar(_to_planar(x), crop), x.shape[-1])


def _bilinear(img, sx, sy, lo, hi):
  """Bilinear samples of planar img [B, C, Hi, Wi] at float pixel coords sx, sy [B, N].

  Pixel centres at integer coordinates; taps outside the rectangle
  lo = (x0, y0) <= (x, y) < hi = (x1, y1) (traced ints) read as 0 (the
  zeros padding of grid_sample). Returns [B, C, N].
  """
  b, c, height, width = img.shape
  flat = img.reshape(b, c, height * width)
  x0 = jnp.floor(sx)
  y0 = jnp.floor(sy)
  fx = sx - x0
  fy = sy - y0
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  out = 0.
  for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                         (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
    xi, yi = x0 + dx, y0 + dy
    valid = (xi >= lo[0]) & (xi < hi[0]) & (yi >= lo[1]) & (yi < hi[1])
    idx = jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)
    vals = jnp.take_along_axis(flat, idx[:, None, :], axis=2)
    out = out + vals * jnp.where(valid, weight, 0.)[:, None, :]
  return out


def _official_margin(g_inv, height, width, hz_pad):
  """The official padding (mx0, my0, mx1, my1) [4] int32 for the whole batch."""
  cx, cy = (width - 1) / 2, (height - 1) / 2
  corners = jnp.array([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], jnp.float32)
  cp = jnp.einsum('bij,jk->bik', g_inv, corners, precision=_HIGHEST)  # [B, 3, 4]
  xs, ys = cp[:, 0], cp[:, 1]
  margin = jnp.stack([jnp.max(-xs), jnp.max(-ys), jnp.max(xs), jnp.max(ys)])
  margin = margin + jnp.array([2 * hz_pad - cx, 2 * hz_pad - cy] * 2, jnp.float32)
  margin = jnp.clip(margin, 0, jnp.array([width - 1, height - 1] * 2, jnp.float32))
  return jnp.ceil(margin).astype(jnp.int32)


def warp(images: Array, g_inv: Array) -> Array:
  """The official geometric execution: [B, H, W, C], [B, 3, 3] -> [B, H, W, C].

  g_inv maps output pixels to input pixels in centred pixel coordinates. As
  the official AugmentPipe: reflect padding by the batch margin, 2x sym6
  upsampling, bilinear sampling on a (H + 2 hz) x (W + 2 hz) output at the
  upsampled resolution (hz = 3, the support the downsampling filter needs),
  sym6 downsampling and cropping. Always resamples (an identity g_inv gives the
  input within ~1e-6).
  """
  images = images.astype(jnp.float32)
  g_inv = jax.lax.stop_gradient(g_inv.astype(jnp.float32))
  b, h, w, c = images.shape
  hz_pad = len(SYM6) // 4
  mx0, my0, mx1, my1 = _official_margin(g_inv, h, w, hz_pad)

  # Static reflect padding by the largest official margin; zero what lies
  # outside this batch's official margin.
  px, py = w - 1, h - 1
  x = jnp.pad(_to_planar(images), ((0, 0), (py, py), (px, px)), mode='reflect')
  rows = jnp.arange(h + 2 * py)
  cols = jnp.arange(w + 2 * px)
  row_in = (rows >= py - my0) & (rows < py + h + my1)
  col_in = (cols >= px - mx0) & (cols < px + w + mx1)
  x = x * (row_in[:, None] & col_in[None, :]).astype(x.dtype)[None]

  x = _upsample2x_planar(x)  # [B * C, 2(H + 2 py), 2(W + 2 px)]
  hu, wu = x.shape[1], x.shape[2]

  # Inverse matrix at the upsampled resolution (official: scale by 2 and the
  # half-pixel shift of the upsampled grid). The static padding is symmetric,
  # so the official re-centring translation is not needed here.
  g = _matmul(_scale2d(2., 2., b), _matmul(g_inv, _scale2d(.5, .5, b)))
  g = _matmul(_translate2d(-.5, -.5, b), _matmul(g, _translate2d(.5, .5, b)))

  ho, wo = 2 * (h + 2 * hz_pad), 2 * (w + 2 * hz_pad)
  yo, xo = jnp.meshgrid(jnp.arange(ho, dtype=jnp.float32) - (ho - 1) / 2,
                        jnp.arange(wo, dtype=jnp.float32) - (wo - 1) / 2, indexing='ij')
  xo, yo = xo.reshape(1, -1), yo.reshape(1, -1)
  sx = g[:, 0, 0:1] * xo + g[:, 0, 1:2] * yo + g[:, 0, 2:3] + (wu - 1) / 2
  sy = g[:, 1, 0:1] * xo + g[:, 1, 1:2] * yo + g[:, 1, 2:3] + (hu - 1) / 2
  lo = (2 * (px - mx0), 2 * (py - my0))
  hi = (2 * (px + w + mx1), 2 * (py + h + my1))
  x = _bilinear(x.reshape(b, c, hu, wu), sx, sy, lo, hi).reshape(b * c, ho, wo)
  return _from_planar(_downsample2x_planar(x, crop=1), c)


def _reflect_index(i, n):
  """Reflect-padding index (edge not repeated) for |overshoot| < n; valid mask."""
  j = jnp.where(i < 0, -i, i)
  j = jnp.where(j > n - 1, 2 * (n - 1) - j, j)
  return jnp.clip(j, 0, n - 1), (j >= 0) & (j <= n - 1)


def blit_exact(images: Array, g_inv: Array) -> Array:
  """Exact pixel blit [B, H, W, C] by an integer-valued g_inv [B, 3, 3].

  Not official (the official blits go through `warp`): output pixel (x, y)
  copies input pixel round(g_inv (x, y)), reflecting at the borders (the
  official padding mode) and zero beyond one reflection. For 90-degree
  rotations of non-square images with H - W odd the source lands between
  pixels and is rounded.
  """
  b, h, w, c = images.shape
  cx, cy = (w - 1) / 2, (h - 1) / 2
  yo, xo = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                        jnp.arange(w, dtype=jnp.float32) - cx, indexing='ij')
  xo, yo = xo.reshape(1, -1), yo.reshape(1, -1)
  sx = g_inv[:, 0, 0:1] * xo + g_inv[:, 0, 1:2] * yo + g_inv[:, 0, 2:3] + cx
  sy = g_inv[:, 1, 0:1] * xo + g_inv[:, 1, 1:2] * yo + g_inv[:, 1, 2:3] + cy
  ix, vx = _reflect_index(jnp.round(sx).astype(jnp.int32), w)
  iy, vy = _reflect_index(jnp.round(sy).astype(jnp.int32), h)
  flat = images.reshape(b, h * w, c)
  out = jnp.take_along_axis(flat, (iy * w + ix)[..., None], axis=1)
  out = out * (vx & vy)[..., None].astype(out.dtype)
  return out.reshape(b, h, w, c)


def apply_color(images: Array, c: Array) -> Array:
  """Colour matrix c [B, 4, 4] on images [B, H, W, C] (C = 3 or 1), as official.

  RGB: rgb' = C[:3, :3] rgb + C[:3, 3]. Greyscale: the mean of the first three
  rows acts on (l, l, l, 1). Written as explicit products and sums (no matmul
  precision modes), so an identity matrix returns the input exactly.
  """
  channels = images.shape[-1]
  c = c[:, None, None]  # [B, 1, 1, 4, 4]
  if channels == 3:
    out = [c[..., i, 3] + images[..., 0] * c[..., i, 0] + images[..., 1] * c[..., i, 1]
           + images[..., 2] * c[..., i, 2] for i in range(3)]
    return jnp.stack(out, axis=-1)
  if channels == 1:
    row = jnp.mean(c[..., :3, :], axis=-2)  # [B, 1, 1, 4]
    return images * jnp.sum(row[..., :3], axis=-1, keepdims=True) + row[..., 3:]
  raise ValueError(f'colour transforms need RGB (3) or L (1) channels, got {channels}')


def imgfilter_bank() -> np.ndarray:
  """The official 4-band filter bank [4, 43] (float64) for image-space filtering.

  With H(z) the sym2 low-pass and H(-z) its high-pass mirror, the half-band
  products L = H(z) H(1/z) / 2 and D = H(-z) H(-1/z) / 2; starting from the
  impulse in band 0, three times: upsample every band by 2 (zeros between
  taps), convolve with L, and add D to band i (i = 1, 2, 3) centred. The rows
  sum to an impulse (perfect reconstruction at unit gains).
  """
  lo = np.asarray(SYM2, np.float64)
  hi = lo * (-1.) ** np.arange(lo.size)
  lo2 = np.convolve(lo, lo[::-1]) / 2
  hi2 = np.convolve(hi, hi[::-1]) / 2
  bank = np.zeros((4, 1))
  bank[0, 0] = 1
  for band in range(1, 4):
    spread = np.zeros((4, 2 * bank.shape[1] - 1))
    spread[:, ::2] = bank
    bank = np.stack([np.convolve(row, lo2) for row in spread])
    start = (bank.shape[1] - hi2.size) // 2
    bank[band, start:start + hi2.size] += hi2
  return bank


def apply_imgfilter(images: Array, gains: Array) -> Array:
  """Per-image band amplification: images [B, H, W, C], gains [B, 4].

  Official: the filter g @ bank (43 taps) per image, applied separably
  (correlation along W then H, same taps for every channel) after reflect
  padding by 21.
  """
  c = images.shape[-1]
  bank = jnp.asarray(imgfilter_bank(), jnp.float32)
  taps = jnp.einsum('bi,ik->bk', gains, bank, precision=_HIGHEST)  # [B, K]
  pad = taps.shape[1] // 2
  x = jnp.pad(_to_planar(images), ((0, 0), (pad, pad), (pad, pad)), mode='reflect')
  taps = jnp.repeat(taps, c, axis=0).T  # [K, B * C]: one filter per plane
  x = _correlate_planar(x, taps, 2)
  x = _correlate_planar(x, taps, 1)
  return _from_planar(x, c)


def apply_cutout(images: Array, size: Array, center: Array) -> Array:
  """Zero a size x size square (relative) at center [B, 2] (x, y); size [B]."""
  _, h, w, _ = images.shape
  xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
  ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  keep_x = jnp.abs(xs[None, :] - center[:, 0:1]) >= size[:, None] / 2  # [B, W]
  keep_y = jnp.abs(ys[None, :] - center[:, 1:2]) >= size[:, None] / 2  # [B, H]
  keep = keep_y[:, :, None] | keep_x[:, None, :]
  return images * keep[..., None].astype(images.dtype)


def _is_identity(m: Array) -> Array:
  """[B, N, N] -> [B] bool: exactly the identity."""
  return jnp.all(m == jnp.eye(m.shape[-1], dtype=m.dtype), axis=(1, 2))


def _keep_where(mask, unchanged, changed):
  return jnp.where(mask[:, None, None, None], unchanged, changed)


def apply_augment(images: Array, params: Mapping[str, Array], *,
                  exact_blit: bool = False) -> Array:
  """Executes `params` (from `sample_params`) on images [B, H, W, C].

  Official order: geometric (blits + general, one resampling), colour,
  image-space filter, noise, cutout. Returns the input dtype. Differentiable
  w.r.t. images (also twice, for R1 through the augmentation).
  """
  dtype = images.dtype
  x = images.astype(jnp.float32)
  b = x.shape[0]
  has_blit = any(k in params for k in _BLIT)
  has_geom = any(k in params for k in _GEOM)
  if exact_blit:
    if has_blit:
      m = blit_matrix(params, b)
      x = _keep_where(_is_identity(m), x, blit_exact(x, m))
    if has_geom:
      m = geom_matrix(params, b)
      x = _keep_where(_is_identity(m), x, warp(x, m))
  elif has_blit or has_geom:
    m = _matmul(blit_matrix(params, b), geom_matrix(params, b))
    x = _keep_where(_is_identity(m), x, warp(x, m))
  if any(k in params for k in _COLOR):
    x = apply_color(x, color_matrix(params, b))
  if 'imgfilter' in params:
    g = params['imgfilter']
    x = _keep_where(jnp.all(g == 1, axis=1), x, apply_imgfilter(x, g))
  if 'noise_sigma' in params:
    x = x + params['noise'] * params['noise_sigma'][:, None, None, None]
  if 'cutout_size' in params:
    x = apply_cutout(x, params['cutout_size'], params['cutout_center'])
  return x.astype(dtype)


def augment(key: Array, images: Array, p, spec='bgc') -> Array:
  """The official AugmentPipe forward: images [B, H, W, C] -> [B, H, W, C].

  p: float scalar, may be traced (jit with `spec` static: a p that changes
  does not recompile). spec: preset name, AugmentSpec or dict (a dict is not
  hashable, so under jit pass a name or an AugmentSpec as the static arg).
  """
  spec = get_spec(spec)
  params = sample_params(key, p, spec, images.shape)
  return apply_augment(images, params, exact_blit=spec.exact_blit)


# --------------------------------------------------------------------------
# Adaptive discriminator augmentation (ADA).


def ada_accumulate(sign_sum, count, real_logits):
  """Adds the signs of D's logits on real images to the running (sum, count).

  real_logits: any shape (one logit per augmented real image). sign(0) = 0.
  """
  real_logits = jnp.asarray(real_logits, jnp.float32)
  return sign_sum + jnp.sum(jnp.sign(real_logits)), count + real_logits.size


def ada_update(p, sign_sum, count, batch_size, interval, target=0.6, kimg=500):
  """The official ADA rule: the new p from the accumulated signs of D(real).

  Official semantics (StyleGAN2-ADA / CREPS training_loop.py): every
  D evaluation on real images reports sign(D(augment(x))) per image
  ('Loss/signs/real', in the Dmain phase and also in the lazy-R1 Dreg phase
  every D_reg_interval=16 steps, on every GPU and accumulation round); after
  every `interval` (ada_interval = 4) training steps (batch_idx counted after
  the step, so first after step 4), the mean r_t of all signs reported since
  the previous adjustment (over all GPUs) gives

      adjust = sign(r_t - target) * (batch_size * interval) / (kimg * 1000)
      p = max(p + adjust, 0)              (no upper clamp, as official)

  with batch_size the global batch, target 0.6 (--target), kimg 500 (100 when
  resuming). So p moves by at most 1 per `kimg` thousand images. The caller
  resets (sign_sum, count) to 0 after each call. Deviation: count = 0 returns
  p unchanged (the official mean would be NaN).
  """
  p = jnp.asarray(p, jnp.float32)
  count = jnp.asarray(count, jnp.float32)
  r_t = jnp.asarray(sign_sum, jnp.float32) / jnp.maximum(count, 1)
  adjust = jnp.sign(r_t - target) * (batch_size * interval) / (kimg * 1000)
  return jnp.where(count > 0, jnp.maximum(p + adjust, 0.), p)


__all__ = [
    'AugmentSpec', 'PRESETS', 'get_spec', 'sample_params', 'apply_augment', 'augment',
    'blit_matrix', 'geom_matrix', 'color_matrix', 'warp', 'blit_exact', 'apply_color',
    'imgfilter_bank', 'imgfilter_gains', 'apply_imgfilter', 'apply_cutout', 'upsample2x',
    'downsample2x', 'ada_accumulate', 'ada_update', 'SYM2', 'SYM6',
]
