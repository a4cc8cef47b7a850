r"""Writes the augmentation parity fixture, by running the official AugmentPipe.

Needs torch, scipy and a user's clone of the official repository (never copied
or committed: it is imported from --official_repo; CREPS's training/augment.py
is StyleGAN2-ADA-pytorch's). Not run in CI; CI tests the file this writes
(tests/test_augment.py).

  pip install torch numpy scipy
  python experiments/official_parity/make_augment_fixtures.py \
      --official_repo=PATH/TO/VinAIResearch/CREPS \
      --out=tests/fixtures/official/augment

The random numbers of the official forward pass (every `torch.rand` /
`torch.randn` call in training/augment.py) are replaced by values this script
supplies (forced ones, or draws from a seeded numpy generator) and recorded in
call order; the per-image parameters they mean (gen_synth.augment's
`sample_params` format) are then worked out from the recorded draws, checking
that the calls came in the expected order and shapes. Cases:

  geom_fixed     scale=1, rotate=1, p=1, 2 images: isotropic scale 1.2 and a
                 pre-rotation by 30 degrees, no post-rotation.
  geom_zoomout   as geom_fixed, (scale 0.45, no rotation) and (scale 1, 10
                 degrees): the first image samples up to the edge of the
                 official (batch-wide, data-dependent) padding, so the zero
                 padding beyond it leaks in through the filter tails (~3e-3).
  blit_fixed     blit, p=1, 2 images: (x-flip, rotate90 k=1, xint (3, -2)) and
                 (no flip, k=2, xint (0, 4)) -- the official blits are
                 resampled through the wavelet path, not exact.
  bgc_random     bgc, p=0.8, 4 images, random draws.
  bgcfnc_random  bgcfnc, p=0.9, 2 images, random draws (filter, noise, cutout).

Output augment.npz: x [4, 32, 32, 3] (NHWC inputs, about [-1, 1]); per case
CASE__y [N, 32, 32, 3] (official output, NHWC) and CASE__<param> (the params;
'imgfilter_t' [N, 4] holds the per-band amplifications t_i before the power
normalisation); meta (JSON: spec, p, N per case); hz_fbank [4, 43] and
hz_geom [12] (the official filter buffers).
"""

import argparse
import json
import os
import sys

import numpy as np

H = W = 32
CHANNELS = 3

BLIT = dict(xflip=1, rotate90=1, xint=1)
GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
CASES = {
    'geom_fixed': (dict(scale=1, rotate=1), 1.0, 2),
    'geom_zoomout': (dict(scale=1, rotate=1), 1.0, 2),
    'blit_fixed': (dict(BLIT), 1.0, 2),
    'bgc_random': (dict(**BLIT, **GEOM, **COLOR), 0.8, 4),
    'bgcfnc_random': (dict(**BLIT, **GEOM, **COLOR, imgfilter=1, noise=1, cutout=1), 0.9, 2),
}

# Official defaults of the magnitudes (AugmentPipe kwargs).
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0
IMGFILTER_STD, NOISE_STD, CUTOUT_SIZE = 1.0, 0.1, 0.5


class RandomSupplier:
  """Stands in for `torch` inside training/augment.py: scripted rand / randn."""

  def __init__(self, torch, rng, forced=None):
    self._torch = torch
    self._rng = rng
    self._forced = dict(forced or {})
    self.calls = []  # (kind, shape, values) in call order.

  def __getattr__(self, name):
    return getattr(self._torch, name)

  def _draw(self, kind, shape, device=None, **unused):
    del unused
    shape = tuple(int(s) for s in (shape[0] if len(shape) == 1 and isinstance(
        shape[0], (list, tuple)) else shape))
    idx = len(self.calls)
    if idx in self._forced:
      values = np.broadcast_to(np.asarray(self._forced[idx], np.float32), shape).copy()
    elif kind == 'rand':
      values = self._rng.random(shape, dtype=np.float32)
    else:
      values = self._rng.standard_normal(shape, dtype=np.float32)
    self.calls.append((kind, shape, values))
    return self._torch.as_tensor(values, device=device)

  def rand(self, *shape, **kwargs):
    return self._draw('rand', shape, **kwargs)

  def randn(self, *shape, **kwargs):
    return self._draw('randn', shape, **kwargs)


def resolve_params(calls, spec, p, n):
  """The per-image parameters (gen_synth layout) that the official draws mean."""
  calls = list(calls)
  f32 = np.float32
  p = f32(p)

  def take(kind, shape):
    got_kind, got_shape, values = calls.pop(0)
    if (got_kind, got_shape) != (kind, tuple(shape)):
      raise AssertionError(f'expected {kind}{shape}, official drew {got_kind}{got_shape}')
    return values.reshape(values.shape[0], -1) if values.ndim > 1 else values

  out = {}
  if spec.get('xflip'):
    i = np.floor(take('rand', [n]) * 2)
    out['xflip'] = np.where(take('rand', [n]) < spec['xflip'] * p, i, 0)
  if spec.get('rotate90'):
    i = np.floor(take('rand', [n]) * 4)
    out['rotate90'] = np.where(take('rand', [n]) < spec['rotate90'] * p, i, 0)
  if spec.get('xint'):
    t = (take('rand', [n, 2]) * 2 - 1) * XINT_MAX
    t = np.where(take('rand', [n, 1]) < spec['xint'] * p, t, 0)
    out['xint'] = np.round(t * np.array([W, H], f32))
  if spec.get('scale'):
    s = np.exp2(take('randn', [n]) * SCALE_STD)
    out['scale'] = np.where(take('rand', [n]) < spec['scale'] * p, s, 1)
  p_rot = f32(1) - np.sqrt(np.clip(f32(1) - f32(spec.get('rotate', 0)) * p, 0, 1))
  if spec.get('rotate'):
    theta = (take('rand', [n]) * 2 - 1) * np.pi * ROTATE_MAX
    out['rotate_pre'] = np.where(take('rand', [n]) < p_rot, theta, 0)
  if spec.get('aniso'):
    s = np.exp2(take('randn', [n]) * ANISO_STD)
    out['aniso'] = np.where(take('rand', [n]) < spec['aniso'] * p, s, 1)
  if spec.get('rotate'):
    theta = (take('rand', [n]) * 2 - 1) * np.pi * ROTATE_MAX
    out['rotate_post'] = np.where(take('rand', [n]) < p_rot, theta, 0)
  if spec.get('xfrac'):
    t = take('randn', [n, 2]) * XFRAC_STD
    t = np.where(take('rand', [n, 1]) < spec['xfrac'] * p, t, 0)
    out['xfrac'] = t * np.array([W, H], f32)
  if spec.get('brightness'):
    b = take('randn', [n]) * BRIGHTNESS_STD
    out['brightness'] = np.where(take('rand', [n]) < spec['brightness'] * p, b, 0)
  if spec.get('contrast'):
    c = np.exp2(take('randn', [n]) * CONTRAST_STD)
    out['contrast'] = np.where(take('rand', [n]) < spec['contrast'] * p, c, 1)
  if spec.get('lumaflip'):
    i = np.floor(take('rand', [n, 1, 1]) * 2)
    out['lumaflip'] = np.where(take('rand', [n, 1, 1]) < spec['lumaflip'] * p, i, 0)[:, 0]
  if spec.get('hue'):
    theta = (take('rand', [n]) * 2 - 1) * np.pi * HUE_MAX
    out['hue'] = np.where(take('rand', [n]) < spec['hue'] * p, theta, 0)
  if spec.get('saturation'):
    s = np.exp2(take('randn', [n, 1, 1]) * SATURATION_STD)
    out['saturation'] = np.where(take('rand', [n, 1, 1]) < spec['saturation'] * p, s, 1)[:, 0]
  if spec.get('imgfilter'):
    ts = []
    for _ in range(4):
      t_i = np.exp2(take('randn', [n]) * IMGFILTER_STD)
      ts.append(np.where(take('rand', [n]) < spec['imgfilter'] * p, t_i, 1))
    out['imgfilter_t'] = np.stack(ts, axis=1)
  if spec.get('noise'):
    sigma = np.abs(take('randn', [n, 1, 1, 1])) * NOISE_STD
    out['noise_sigma'] = np.where(take('rand', [n, 1, 1, 1]) < spec['noise'] * p, sigma, 0)[:, 0]
    field = take('randn', [n, CHANNELS, H, W]).reshape(n, CHANNELS, H, W)
    out['noise'] = field.transpose(0, 2, 3, 1)
  if spec.get('cutout'):
    size = np.where(take('rand', [n, 1, 1, 1, 1]) < spec['cutout'] * p, CUTOUT_SIZE, 0)
    out['cutout_size'] = size[:, 0]
    out['cutout_center'] = take('rand', [n, 2, 1, 1, 1])
  if calls:
    raise AssertionError(f'{len(calls)} official draws left unexplained')
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


def forced_draws(case):
  """{call index: value} overrides of the draws for the fixed cases."""
  if case == 'geom_fixed':
    # scale: randn z with 2^(0.2 z) = 1.2, gate rand 0 (on); pre-rotation:
    # rand u with (2u - 1) pi = 30 deg, gate 0 (on); post: gate 0.999 (off).
    return {0: np.log2(1.2) / SCALE_STD, 1: 0.0, 2: (1 / 6 + 1) / 2, 3: 0.0,
            4: 0.5, 5: 0.999}
  if case == 'geom_zoomout':
    return {0: [np.log2(0.45) / SCALE_STD, 0.0], 1: 0.0, 2: [0.5, (1 / 18 + 1) / 2],
            3: 0.0, 4: 0.5, 5: 0.999}
  if case == 'blit_fixed':
    # Per image: x-flip coin (>= 0.5 = flip), gate; rotate90 k = floor(4u),
    # gate; xint t = (2u - 1) 0.125, round(t * 32), gate.
    def u_for_shift(pixels):
      return (pixels / W / XINT_MAX + 1) / 2
    return {0: [0.75, 0.25], 1: 0.0, 2: [1.5 / 4, 2.5 / 4], 3: 0.0,
            4: [[u_for_shift(3), u_for_shift(-2)], [u_for_shift(0), u_for_shift(4)]],
            5: 0.0}
  return {}


def make_images(rng, n):
  """Smooth random colour images with some fine detail, about [-1, 1] (NHWC)."""
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  coarse = rng.standard_normal((n, 8, 8, CHANNELS))
  smooth = scipy.ndimage.zoom(coarse, (1, H / 8, W / 8, 1), order=3)
  return np.tanh(0.8 * smooth + 0.15 * rng.standard_normal((n, H, W, CHANNELS))).astype(np.float32)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--official_repo', required=True)
  parser.add_argument('--out', default='tests/fixtures/official/augment')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()

  sys.path.insert(0, os.path.abspath(args.official_repo))
  import torch  # pylint: disable=g-import-not-at-top
  from training import augment as official  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(args.seed)
  x = make_images(rng, 4)
  arrays = {'x': x}
  meta = {}
  for case, (spec, p, n) in CASES.items():
    pipe = official.AugmentPipe(**spec)
    pipe.p.copy_(torch.as_tensor(p))
    supplier = RandomSupplier(torch, rng, forced_draws(case))
    official.torch = supplier
    try:
      with torch.no_grad():
        y = pipe(torch.as_tensor(x[:n]).permute(0, 3, 1, 2).contiguous())
    finally:
      official.torch = torch
    params = resolve_params(supplier.calls, spec, p, n)
    arrays[f'{case}__y'] = y.permute(0, 2, 3, 1).numpy().astype(np.float32)
    for name, value in params.items():
      arrays[f'{case}__{name}'] = value
    meta[case] = dict(spec=spec, p=p, n=n)
    print(case, {k: np.round(v, 4).tolist() for k, v in params.items() if v.size <= 16})
  pipe = official.AugmentPipe()
  arrays['hz_fbank'] = pipe.Hz_fbank.numpy().astype(np.float32)
  arrays['hz_geom'] = pipe.Hz_geom.numpy().astype(np.float32)
  arrays['meta'] = np.array(json.dumps(meta))
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'augment.npz')
  np.savez_compressed(path, **arrays)
  print('wrote', path, os.path.getsize(path), 'bytes')


if __name__ == '__main__':
  main()
