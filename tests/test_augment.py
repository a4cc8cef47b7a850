"""Tests of gen_synth.augment: the StyleGAN2-ADA augmentation pipeline and ADA rule."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth import augment as A

# Jitted once per test module: eager op-by-op dispatch is far slower on CPU.
_apply = jax.jit(A.apply_augment, static_argnames='exact_blit')
_augment = jax.jit(A.augment, static_argnames='spec')
_sample = jax.jit(A.sample_params, static_argnames=('spec', 'shape'))
_warp = jax.jit(A.warp)

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'official' / 'augment' / 'augment.npz'


def _images(b=2, h=16, w=16, c=3, seed=0):
  """Asymmetric images in [-1, 1] (no flip / rotation maps one onto another)."""
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (b, h, w, c)), jnp.float32)


def _off(*names, **kwargs):
  """Spec with only `names` at multiplier 1."""
  return A.AugmentSpec(**{n: 1. for n in names}, **kwargs)


# --------------------------------------------------------------------------
# Presets and API.


def test_presets_match_official_augpipe_specs():
  blit = {'xflip', 'rotate90', 'xint'}
  geom = {'scale', 'rotate', 'aniso', 'xfrac'}
  color = {'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'}
  official = {
      'blit': blit, 'geom': geom, 'color': color, 'filter': {'imgfilter'},
      'noise': {'noise'}, 'cutout': {'cutout'}, 'bg': blit | geom,
      'bgc': blit | geom | color, 'bgcf': blit | geom | color | {'imgfilter'},
      'bgcfn': blit | geom | color | {'imgfilter', 'noise'},
      'bgcfnc': blit | geom | color | {'imgfilter', 'noise', 'cutout'},
  }
  mults = blit | geom | color | {'imgfilter', 'noise', 'cutout'}
  assert set(A.PRESETS) == set(official)
  for name, enabled in official.items():
    spec = A.PRESETS[name]
    assert {m for m in mults if getattr(spec, m) != 0} == enabled, name
    assert all(getattr(spec, m) == 1 for m in enabled)
  # Official magnitudes.
  spec = A.AugmentSpec()
  assert (spec.xint_max, spec.scale_std, spec.rotate_max, spec.aniso_std, spec.xfrac_std) == (
      0.125, 0.2, 1, 0.2, 0.125)
  assert (spec.brightness_std, spec.contrast_std, spec.hue_max, spec.saturation_std) == (
      0.2, 0.5, 1, 1)
  assert (spec.imgfilter_std, spec.noise_std, spec.cutout_size) == (1, 0.1, 0.5)


def test_get_spec_errors_and_dicts():
  with pytest.raises(ValueError, match='unknown augmentation preset'):
    A.get_spec('bgcx')
  with pytest.raises(ValueError, match='unknown augmentation fields'):
    A.get_spec({'xflip': 1, 'cyclic': 1})
  assert A.get_spec({'xflip': 1, 'imgfilter_bands': [1, 0, 0, 0]}) == A.AugmentSpec(
      xflip=1, imgfilter_bands=(1., 0., 0., 0.))


@pytest.mark.parametrize('spec', ['bgcfnc', dataclasses.replace(A.PRESETS['bg'], exact_blit=True)])
def test_p0_returns_input_exactly(spec):
  x = _images(3, 24, 24)  # > 21: the image-space filter's reflect padding.
  y = _augment(jax.random.key(0), x, 0.0, spec=spec)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_dtype_is_kept():
  x = _images(2, 8, 8).astype(jnp.bfloat16)
  y = _augment(jax.random.key(0), x, 0.0, spec='color')
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  assert _augment(jax.random.key(0), x, 1.0, spec='color').dtype == jnp.bfloat16


# --------------------------------------------------------------------------
# Pixel blitting.


def test_xflip_exact_flips_and_twice_is_identity():
  x = _images(3)
  params = {'xflip': jnp.array([1., 0., 1.])}
  once = np.asarray(_apply(x, params, exact_blit=True))
  np.testing.assert_array_equal(once[0], np.asarray(x[0])[:, ::-1])
  np.testing.assert_array_equal(once[1], np.asarray(x[1]))
  np.testing.assert_array_equal(once[2], np.asarray(x[2])[:, ::-1])
  twice = _apply(jnp.asarray(once), params, exact_blit=True)
  np.testing.assert_array_equal(np.asarray(twice), np.asarray(x))


def test_rotate90_matches_np_rot90():
  x = _images(4)
  params = {'rotate90': jnp.array([0., 1., 2., 3.])}
  y = np.asarray(_apply(x, params, exact_blit=True))
  for k in range(4):
    np.testing.assert_array_equal(y[k], np.rot90(np.asarray(x[k]), k, axes=(0, 1)))
  # The same matrix executed by the official (filtered) resampling: close to
  # np.rot90 but not exact (sym6 is not symmetric) -- see the module docstring.
  y_official = np.asarray(_apply(x, params))
  np.testing.assert_allclose(y_official[0], np.asarray(x[0]), atol=1e-5)
  err = np.abs(y_official[1] - y[1])
  assert 1e-2 < err.max() < 1 and err.mean() < 0.2


@pytest.mark.parametrize('exact_blit', [True, False])
def test_xint_shifts_exactly_with_reflect_padding(exact_blit):
  x = _images(2)
  params = {'xint': jnp.array([[3., -2.], [0., 0.]])}  # (tx, ty) pixels.
  y = np.asarray(_apply(x, params, exact_blit=exact_blit))
  xn = np.asarray(x)
  tol = dict(rtol=0, atol=0 if exact_blit else 1e-5)
  # Interior: content moved 3 right and 2 up.
  np.testing.assert_allclose(y[0, :14, 3:], xn[0, 2:, :13], **tol)
  # Uncovered columns / rows: reflections about the border (edge not repeated).
  np.testing.assert_allclose(y[0, :14, :3], xn[0, 2:, 3:0:-1], **tol)
  np.testing.assert_allclose(y[0, 14:, 3:], xn[0, 14:12:-1, :13], **tol)
  np.testing.assert_allclose(y[1], xn[1], **tol)


def test_blit_composition_order():
  """G_inv = flip @ rot90 @ translate: flip first, then rotate, then shift."""
  x = _images(1)
  params = {'xflip': jnp.array([1.]), 'rotate90': jnp.array([1.]), 'xint': jnp.array([[2., 1.]])}
  y = np.asarray(_apply(x, params, exact_blit=True))[0]
  z = np.rot90(np.asarray(x[0])[:, ::-1], 1, axes=(0, 1))
  z = np.pad(z, ((1, 0), (2, 0), (0, 0)), mode='reflect')[:16, :16]
  np.testing.assert_array_equal(y, z)


# --------------------------------------------------------------------------
# General geometric transforms.


def test_warp_identity_matrix_returns_input():
  x = _images(2, 16, 24)
  y = _warp(x, jnp.broadcast_to(jnp.eye(3), (2, 3, 3)))
  assert y.shape == x.shape
  np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-5)
  assert not np.array_equal(np.asarray(y), np.asarray(x))  # It did resample.


def test_warp_rotation_by_90_degrees_and_translation():
  """The general path with a rotate_pre of pi/2 equals the 90-degree blit (~)."""
  x = _images(1)
  rot = _apply(x, {'rotate_pre': jnp.array([np.pi / 2])})
  blit = _apply(x, {'rotate90': jnp.array([1.])})
  np.testing.assert_allclose(np.asarray(rot), np.asarray(blit), atol=1e-4)
  # Fractional translation by whole pixels = integer translation.
  frac = _apply(x, {'xfrac': jnp.array([[3., -2.]])})
  xint = _apply(x, {'xint': jnp.array([[3., -2.]])}, exact_blit=True)
  np.testing.assert_allclose(np.asarray(frac), np.asarray(xint), atol=1e-5)


def _grouped_conv_reference(x, taps, axis, dilation, stride, padding):
  """lax.conv_general_dilated, one group per plane: what _correlate_planar replaces."""
  taps = jnp.asarray(taps, jnp.float32)
  n = x.shape[0]
  if taps.ndim == 1:
    taps = jnp.broadcast_to(taps[:, None], (taps.shape[0], n))
  k = taps.shape[0]
  shape = (k, 1, 1, n) if axis == 1 else (1, k, 1, n)
  one = (1, 1)
  st = (stride, 1) if axis == 1 else (1, stride)
  dil = (dilation, 1) if axis == 1 else (1, dilation)
  pads = [padding, (0, 0)] if axis == 1 else [(0, 0), padding]
  y = jax.lax.conv_general_dilated(
      jnp.transpose(x, (1, 2, 0))[None], taps.reshape(shape), st, pads, lhs_dilation=dil,
      rhs_dilation=one, dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=n,
      precision=jax.lax.Precision.HIGHEST)
  return jnp.transpose(y[0], (2, 0, 1))


@pytest.mark.parametrize('axis', [1, 2])
@pytest.mark.parametrize('dilation,stride,padding', [
    (2, 1, (6, 6)), (1, 2, (0, 0)), (1, 1, (21, 21)), (2, 1, (1, 3)), (1, 2, (2, 1))])
@pytest.mark.parametrize('per_plane', [False, True])
def test_planar_correlation_equals_grouped_convolution(axis, dilation, stride, padding,
                                                       per_plane):
  """Forward, VJP (images and taps) and R1's second order equal the grouped convolution."""
  rng = np.random.default_rng(axis * 100 + dilation * 10 + stride)
  x = jnp.asarray(rng.normal(size=(4, 17, 19)), jnp.float32)
  taps = jnp.asarray(rng.normal(size=(12, 4) if per_plane else (12,)), jnp.float32)
  ours = lambda x, t: A._correlate_planar(  # pylint: disable=protected-access
      x, t, axis, dilation=dilation, stride=stride, padding=padding)
  ref = lambda x, t: _grouped_conv_reference(x, t, axis, dilation, stride, padding)

  def close(a, b):
    b = np.asarray(b)
    np.testing.assert_allclose(np.asarray(a), b, rtol=0, atol=1e-5 * np.abs(b).max())

  y = jax.jit(ours)(x, taps)
  close(y, ref(x, taps))
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for a, b in zip(jax.jit(lambda x, t: jax.vjp(ours, x, t)[1](g))(x, taps),
                  jax.vjp(ref, x, taps)[1](g)):
    close(a, b)

  def second_order(f):
    return jax.grad(lambda t: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.sin(f(x, t))))(x) ** 2))
  close(jax.jit(second_order(ours))(taps), second_order(ref)(taps))


def test_warp_runs_without_convolutions_and_keeps_its_fusion_barriers():
  """The resampling is slices, not grouped convolutions, in every derivative order, and
  the conditionals that stop XLA from recomputing the bilinear gathers once per filter
  tap survive compilation (XLA:CPU fuses through `lax.optimization_barrier`)."""
  x = _images(2, 16, 16)
  m = jnp.broadcast_to(jnp.array([[0.9, 0.1, 0.3], [-0.1, 0.9, 0.2], [0., 0., 1.]]), (2, 3, 3))
  grad = jax.grad(lambda x, m: jnp.sum(jnp.sin(A.warp(x, m))))
  r1 = jax.grad(lambda w: jnp.sum(jax.grad(lambda x: jnp.sum(w * A.warp(x, m)))(x) ** 2))
  for f, args in ((A.warp, (x, m)), (grad, (x, m)), (r1, (x,))):
    assert 'convolution' not in jax.jit(f).lower(*args).as_text()
  compiled = jax.jit(lambda x, m: A.warp(x, m)).lower(x, m).compile().as_text()
  # One barrier per separable pass: 2 in the upsampling, 2 in the downsampling.
  assert compiled.count(' conditional(') >= 4


def test_official_margin():
  eye = jnp.broadcast_to(jnp.eye(3), (2, 3, 3))
  np.testing.assert_array_equal(np.asarray(A._official_margin(eye, 16, 16, 3)), [6] * 4)
  # A 2x zoom-out of one image: corners at +-15 -> 15 + 6 - 7.5 = 13.5 -> 14,
  # for the whole batch; a 4x one clamps at W - 1.
  g = eye.at[1].set(jnp.diag(jnp.array([2., 2., 1.])))
  np.testing.assert_array_equal(np.asarray(A._official_margin(g, 16, 16, 3)), [14] * 4)
  g = eye.at[0].set(jnp.diag(jnp.array([4., 1., 1.])))
  np.testing.assert_array_equal(np.asarray(A._official_margin(g, 16, 16, 3)), [15, 6, 15, 6])


def test_geom_matrix_composition():
  params = {'scale': jnp.array([2.]), 'rotate_pre': jnp.array([0.3]),
            'aniso': jnp.array([1.5]), 'rotate_post': jnp.array([-0.7]),
            'xfrac': jnp.array([[1.5, -2.]])}

  def rot(t):
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

  expected = (np.diag([0.5, 0.5, 1]) @ rot(0.3) @ np.diag([1 / 1.5, 1.5, 1]) @ rot(-0.7)
              @ np.array([[1, 0, -1.5], [0, 1, 2.], [0, 0, 1]]))
  np.testing.assert_allclose(np.asarray(A.geom_matrix(params, 1))[0], expected, atol=1e-6)


# --------------------------------------------------------------------------
# Colour.


def test_brightness_adds_the_drawn_value():
  x = jnp.full((64, 4, 4, 3), 0.25, jnp.float32)
  params = _sample(jax.random.key(1), 1.0, _off('brightness'), x.shape)
  b = np.asarray(params['brightness'])
  assert np.all(b != 0) and 0.1 < b.std() < 0.3  # N(0, 0.2), all applied at p = 1.
  y = np.asarray(_apply(x, params))
  np.testing.assert_array_equal(y, np.float32(0.25) + b[:, None, None, None] * np.ones_like(y))
  # Random content: exactly x + b too.
  xr = _images(64, 4, 4)
  y = np.asarray(_apply(xr, params))
  np.testing.assert_array_equal(y, np.asarray(xr) + b[:, None, None, None])


def test_contrast_lumaflip_saturation_properties():
  x = _images(2, 4, 4)
  xn = np.asarray(x)
  mean = xn.mean(axis=-1, keepdims=True)
  y = _apply(x, {'contrast': jnp.array([2., 1.])})
  np.testing.assert_allclose(np.asarray(y), xn * np.array([2., 1.])[:, None, None, None],
                             atol=1e-6)
  # Luma flip: Householder reflection about (1,1,1): x - 2 mean(x).
  y = _apply(x, {'lumaflip': jnp.array([1., 0.])})
  np.testing.assert_allclose(np.asarray(y)[0], xn[0] - 2 * mean[0], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(y)[1], xn[1])
  # Saturation 1 = identity (exactly), 0 = grey (the channel mean).
  y = _apply(x, {'saturation': jnp.array([1., 0.])})
  np.testing.assert_array_equal(np.asarray(y)[0], xn[0])
  np.testing.assert_allclose(np.asarray(y)[1], np.broadcast_to(mean[1], xn[1].shape), atol=1e-6)


def test_hue_rotation():
  x = _images(3, 4, 4)
  xn = np.asarray(x)
  y = np.asarray(_apply(x, {'hue': jnp.array([2 * np.pi, 2 * np.pi / 3, 0.7])}))
  np.testing.assert_allclose(y[0], xn[0], atol=1e-5)  # 360 degrees.
  np.testing.assert_allclose(y[1], xn[1][..., [2, 0, 1]], atol=1e-5)  # 120: R->G->B.
  # Any angle keeps the luma (projection on (1,1,1)) and the chroma norm.
  np.testing.assert_allclose(y[2].mean(-1), xn[2].mean(-1), atol=1e-6)
  chroma = lambda z: np.linalg.norm(z - z.mean(-1, keepdims=True), axis=-1)
  np.testing.assert_allclose(chroma(y[2]), chroma(xn[2]), atol=1e-5)
  assert np.abs(y[2] - xn[2]).max() > 0.1


def test_color_greyscale_images():
  x = _images(2, 4, 4, c=1)
  params = {'brightness': jnp.array([0.5, 0.]), 'contrast': jnp.array([1., 3.]),
            'lumaflip': jnp.array([0., 1.])}
  y = np.asarray(_apply(x, params))
  xn = np.asarray(x)
  np.testing.assert_allclose(y[0], xn[0] + 0.5, atol=1e-6)
  # Luma flip of a grey image negates it (x - 2 mean(x, x, x)).
  np.testing.assert_allclose(y[1], -3 * xn[1], atol=1e-5)
  # Hue / saturation are skipped for 1 channel, as official.
  params = _sample(jax.random.key(0), 1.0, 'bgc', x.shape)
  assert 'hue' not in params and 'saturation' not in params
  assert _augment(jax.random.key(0), x, 1.0, 'bgc').shape == x.shape


# --------------------------------------------------------------------------
# Image-space filtering and corruptions.


def test_imgfilter_bank_and_gains():
  bank = A.imgfilter_bank()
  assert bank.shape == (4, 43)
  np.testing.assert_allclose(bank.sum(axis=0), np.eye(1, 43, 21)[0], atol=1e-12)
  np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-15)  # Symmetric bands.
  x = _images(2, 24, 24)
  y = A.apply_imgfilter(x, jnp.array([[1.] * 4, [2.] * 4]))
  np.testing.assert_allclose(np.asarray(y[0]), np.asarray(x[0]), atol=1e-5)
  # Separable (W then H): gains 2 act twice.
  np.testing.assert_allclose(np.asarray(y[1]), 4 * np.asarray(x[1]), atol=1e-5)
  # Only the coarsest band kept: a low-pass (smoother, DC kept).
  y = np.asarray(A.apply_imgfilter(x, jnp.array([[1., 0., 0., 0.]] * 2)))
  assert np.abs(np.diff(y, axis=1)).mean() < 0.3 * np.abs(np.diff(np.asarray(x), axis=1)).mean()
  # Gains: t = 1 is exactly 1; one band amplified is power-normalised.
  g = np.asarray(A.imgfilter_gains(jnp.array([[1., 1., 1., 1.], [1., 2., 1., 1.]])))
  np.testing.assert_array_equal(g[0], 1.)
  norm = np.sqrt(10 / 13 + 4 / 13 + 2 / 13)
  np.testing.assert_allclose(g[1], np.array([1, 2, 1, 1]) / norm, rtol=1e-6)


def test_noise_and_cutout():
  x = _images(2, 8, 8)
  field = jax.random.normal(jax.random.key(3), x.shape)
  params = {'noise_sigma': jnp.array([0.1, 0.]), 'noise': field,
            'cutout_size': jnp.array([0.5, 0.]), 'cutout_center': jnp.array([[0.5, 0.5]] * 2)}
  y = np.asarray(_apply(x, params))
  expected = np.asarray(x[0] + 0.1 * field[0])
  mask = np.ones((8, 8, 1), np.float32)
  mask[2:6, 2:6] = 0  # Centres (i + .5) / 8 within 0.25 of 0.5.
  np.testing.assert_allclose(y[0], expected * mask, atol=1e-7)
  np.testing.assert_array_equal(y[1], np.asarray(x[1]))


# --------------------------------------------------------------------------
# Sampling statistics.


def test_flip_fraction_at_half_p():
  """Official: x-flip is gated with prob. p, then a fair coin: P(flip) = p / 2."""
  n = 4096
  x = _images(n, 4, 4, seed=5)
  spec = _off('xflip', exact_blit=True)
  y = np.asarray(_augment(jax.random.key(7), x, 0.5, spec))
  xn = np.asarray(x)
  flipped = np.all(y == xn[:, :, ::-1], axis=(1, 2, 3))
  same = np.all(y == xn, axis=(1, 2, 3))
  assert np.all(flipped ^ same)
  std = np.sqrt(0.25 * 0.75 / n)
  assert abs(flipped.mean() - 0.25) < 4 * std, flipped.mean()
  # The gate alone (x-flip "applied", coin or not) fires with prob. p = 0.5:
  # P(flip) = P(gate) / 2 holds for other p as well.
  fractions = [float(np.mean(np.asarray(_sample(
      jax.random.key(k), p, spec, (n, 4, 4, 3))['xflip']))) for k, p in ((1, 0.5), (2, 1.0))]
  assert abs(fractions[0] - 0.25) < 4 * std and abs(fractions[1] - 0.5) < 4 * np.sqrt(0.25 / n)


def test_p0_draws_identity_and_p1_applies_all():
  shape = (2048, 4, 4, 3)  # Sampling does not depend on the image size.
  identity = {'xflip': 0, 'rotate90': 0, 'xint': 0, 'scale': 1, 'rotate_pre': 0,
              'rotate_post': 0, 'aniso': 1, 'xfrac': 0, 'brightness': 0, 'contrast': 1,
              'lumaflip': 0, 'hue': 0, 'saturation': 1, 'imgfilter': 1, 'noise_sigma': 0,
              'cutout_size': 0}
  params = _sample(jax.random.key(3), 0.0, A.PRESETS['bgcfnc'], shape)
  assert set(params) == set(identity) | {'noise', 'cutout_center'}
  for name, value in identity.items():
    assert np.all(np.asarray(params[name]) == value), name
  # p = 1: every continuous transform is applied to every image (u < 1).
  params = _sample(jax.random.key(3), 1.0, A.PRESETS['bgcfnc'], shape)
  for name in ('scale', 'aniso', 'xfrac', 'brightness', 'contrast', 'hue', 'saturation',
               'noise_sigma', 'cutout_size', 'imgfilter'):
    value = np.asarray(params[name]).reshape(shape[0], -1)
    assert np.all(np.any(value != identity[name], axis=1)), name


def test_sampling_distributions():
  n = 8192
  params = _sample(jax.random.key(11), 0.6, 'bgc', (n, 32, 32, 3))
  params = {k: np.asarray(v) for k, v in params.items()}
  # Rotation: P(pre or post) = p with each at 1 - sqrt(1 - p).
  rotated = (params['rotate_pre'] != 0) | (params['rotate_post'] != 0)
  assert abs(rotated.mean() - 0.6) < 4 * np.sqrt(0.24 / n)
  assert abs((params['rotate_pre'] != 0).mean() - (1 - np.sqrt(0.4))) < 4 * np.sqrt(0.25 / n)
  assert np.abs(params['rotate_pre']).max() <= np.pi
  # rotate90: gate p, then k uniform in 0..3 (k = 0 included).
  assert set(np.unique(params['rotate90'])) == {0, 1, 2, 3}
  assert abs((params['rotate90'] != 0).mean() - 0.6 * 0.75) < 4 * np.sqrt(0.25 / n)
  # Integer translation: whole pixels within 0.125 * 32 = 4.
  assert np.all(params['xint'] == np.round(params['xint'])) and np.abs(params['xint']).max() == 4
  # Log-normal scales: log2 std 0.2 / 0.5 / 1 among the applied ones.
  for name, std in (('scale', 0.2), ('aniso', 0.2), ('contrast', 0.5), ('saturation', 1.0)):
    on = params[name] != 1
    assert abs(on.mean() - 0.6) < 4 * np.sqrt(0.24 / n), name
    assert abs(np.log2(params[name][on]).std() - std) < 0.05 * std, name
  assert abs(params['brightness'][params['brightness'] != 0].std() - 0.2) < 0.01
  assert abs(params['xfrac'][params['xfrac'][:, 0] != 0].std() / 32 - 0.125) < 0.01
  # Different transforms draw independently.
  assert abs(np.corrcoef(params['scale'], params['aniso'])[0, 1]) < 0.05


# --------------------------------------------------------------------------
# Gradients and jit.


def _tiny_d(params, x):
  """Stands in for D: [B, H, W, 3] -> [B]."""
  w1, w2 = params
  h = jnp.tanh(jnp.einsum('bhwc,cd->bhwd', x, w1))
  return jnp.einsum('bhwd,d->b', h * jnp.linspace(0.5, 1.5, x.shape[2])[None, None, :, None], w2)


def test_gradient_flows_through_bgc():
  x = _images(2, 16, 16)
  key = jax.random.key(4)
  d_params = (jax.random.normal(jax.random.key(0), (3, 4)), jnp.arange(1., 5.))

  def f(images):
    return jnp.sum(_tiny_d(d_params, _augment(key, images, 1.0, 'bgc')))

  g = jax.jit(jax.grad(f))(x)
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0
  # Matches a central finite difference along a random direction.
  v = jax.random.normal(jax.random.key(9), x.shape)
  eps = 1e-2
  fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
  np.testing.assert_allclose(float(jnp.vdot(g, v)), float(fd), rtol=2e-2)


def test_r1_second_order_gradient():
  """R1 through the pipeline: d/dtheta ||d D(aug(x)) / dx||^2 is finite, non-zero."""
  x = _images(2, 16, 16)
  key = jax.random.key(2)
  d_params = (jax.random.normal(jax.random.key(0), (3, 4)), jnp.arange(1., 5.))

  def r1(params):
    grad_x = jax.grad(lambda im: jnp.sum(_tiny_d(params, _augment(key, im, 1.0, 'bg'))))(x)
    return jnp.sum(jnp.square(grad_x))

  g = jax.jit(jax.grad(r1))(d_params)
  for leaf in jax.tree.leaves(g):
    assert np.all(np.isfinite(np.asarray(leaf))) and float(jnp.abs(leaf).sum()) > 0


def test_jit_p_changes_without_recompiling():
  traces = []

  def fn(key, images, p):
    traces.append(1)
    return A.augment(key, images, p, 'bgc')

  jitted = jax.jit(fn)
  x = _images(2, 16, 16)
  outs = [np.asarray(jitted(jax.random.key(0), x, jnp.float32(p))) for p in (0.0, 0.3, 1.0)]
  assert len(traces) == 1 and jitted._cache_size() == 1  # pylint: disable=protected-access
  np.testing.assert_array_equal(outs[0], np.asarray(x))  # p really is read at run time.
  assert not np.array_equal(outs[2], np.asarray(x))
  # A p kept in a train state, updated inside jit.
  state = {'p': jnp.float32(0.)}
  new_p = jax.jit(A.ada_update)(state['p'], 10., 10., 32, 4, 0.6, 500)
  np.testing.assert_allclose(float(new_p), 32 * 4 / 500e3, rtol=1e-6)


# --------------------------------------------------------------------------
# ADA.


def test_ada_update_hand_computed():
  # r_t = 30 / 40 = 0.75 > 0.6: + 32 * 4 / (500 * 1000) = 2.56e-4.
  np.testing.assert_allclose(float(A.ada_update(0.1, 30., 40, 32, 4, 0.6, 500)), 0.100256,
                             rtol=1e-6)
  # r_t = 0.25 < 0.6: - 64 * 4 / 100e3 = -2.56e-3.
  np.testing.assert_allclose(float(A.ada_update(0.5, 10., 40, 64, 4, 0.6, 100)), 0.49744,
                             rtol=1e-6)
  # Clamped at 0.
  assert float(A.ada_update(1e-4, -40., 40, 32, 4, 0.6, 500)) == 0.
  # Exactly at the target (sign 0) or nothing accumulated: unchanged. No upper clamp.
  assert float(A.ada_update(0.3, 24., 40, 32, 4, 0.6, 500)) == np.float32(0.3)
  assert float(A.ada_update(0.3, 0., 0, 32, 4, 0.6, 500)) == np.float32(0.3)
  assert float(A.ada_update(1.0, 40., 40, 32, 4, 0.6, 500)) > 1.0
  # Accumulating the signs of real logits.
  s, c = A.ada_accumulate(0., 0, jnp.array([[1.5], [-0.2], [0.], [3.]]))
  s, c = A.ada_accumulate(s, c, jnp.array([2., 2.]))
  assert float(s) == 3. and int(c) == 6


# --------------------------------------------------------------------------
# Parity with the official torch AugmentPipe (fixture from
# experiments/official_parity/make_augment_fixtures.py).


def _fixture_cases():
  data = np.load(FIXTURE)
  meta = json.loads(str(data['meta']))
  return data, meta


def _fixture_params(data, case):
  prefix = case + '__'
  params = {k[len(prefix):]: jnp.asarray(data[k]) for k in data.files
            if k.startswith(prefix) and k != prefix + 'y'}
  if 'imgfilter_t' in params:
    params['imgfilter'] = A.imgfilter_gains(params.pop('imgfilter_t'))
  return params


def test_filters_match_official_buffers():
  data, _ = _fixture_cases()
  np.testing.assert_allclose(A.imgfilter_bank(), data['hz_fbank'], atol=1e-7)
  np.testing.assert_allclose(A._geom_taps(), data['hz_geom'], atol=1e-8)  # pylint: disable=protected-access


@pytest.mark.parametrize('case', ['geom_fixed', 'geom_zoomout', 'blit_fixed', 'bgc_random',
                                  'bgcfnc_random'])
def test_matches_official_augment_pipe(case):
  data, meta = _fixture_cases()
  n = meta[case]['n']
  params = _fixture_params(data, case)
  expected_keys = {'xflip', 'rotate90', 'xint', 'scale', 'rotate_pre', 'rotate_post', 'aniso',
                   'xfrac', 'brightness', 'contrast', 'lumaflip', 'hue', 'saturation',
                   'imgfilter', 'noise_sigma', 'noise', 'cutout_size', 'cutout_center'}
  assert set(params) <= expected_keys
  # The fixture's parameters have the layout sample_params makes for that spec.
  sampled = _sample(jax.random.key(0), meta[case]['p'], A.get_spec(meta[case]['spec']),
                            data['x'][:n].shape)
  assert set(sampled) == set(params)
  for k in params:
    assert sampled[k].shape == params[k].shape, k
  y = np.asarray(_apply(jnp.asarray(data['x'][:n]), params))
  np.testing.assert_allclose(y, data[case + '__y'], rtol=0, atol=1e-4)
  if case == 'geom_fixed':
    np.testing.assert_allclose(np.asarray(params['scale']), 1.2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(params['rotate_pre']), np.pi / 6, rtol=1e-6)
  if case == 'blit_fixed':
    # Exact blits differ from the official filtered ones by up to ~0.1.
    y_exact = np.asarray(_apply(jnp.asarray(data['x'][:n]), params, exact_blit=True))
    assert np.abs(y_exact - data[case + '__y']).max() > 1e-2
