"""Any-scale generation: streamed tiles, coordinate transforms, scale consistency.

All on the `tiny` CREPS preset (random init). Tolerances: two renders of the
same coordinates through differently shaped jitted calls (tiles, chunks, the
row-by-row reference) differ only by float32 rounding of matmuls whose
blocking depends on the shapes; 1e-5 bounds that at |x| ~ 2 (observed <= 1e-6).
"""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tifffile

from gen_synth import anyscale
from gen_synth import generate
from gen_synth import models
from gen_synth import sampling
from gen_synth.evaluation import scale_consistency as sc
from tests import helpers

ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
  model, variables, _, _ = sampling.load_generator(
      config=helpers.load_config("creps_ffhq.py", "tiny"))
  ws = sampling.map_latents(model, variables, sampling.seed_latents([3], model.z_dim))
  return model, variables, ws


def test_png_stream_writer_roundtrip(tmp_path):
  img = np.random.RandomState(0).randint(0, 256, (37, 29, 3)).astype(np.uint8)
  writer = anyscale.PngStreamWriter(str(tmp_path / "a.png"), 37, 29)
  for i0 in range(0, 37, 10):
    writer.write_rows(img[i0:i0 + 10])
  writer.close()
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)


def test_streamed_tiles_equal_in_memory_image(tiny, tmp_path):
  model, variables, ws = tiny
  h, w, tile = 40, 56, 16                                   # padded edge tiles
  whole = sampling.render(model, variables, ws, h, w)[0]
  for cache in (1 << 30, 0):                                # cached / recomputed columns
    path = str(tmp_path / f"f{cache}.npy")
    anyscale.stream_render(model, variables, ws, path, h, w, tile, dtype="float32",
                           column_cache_bytes=cache, progress=False)
    np.testing.assert_allclose(np.load(path), whole, atol=ATOL, rtol=0)
  for name in ("u.npy", "u.png", "u.tif"):
    anyscale.stream_render(model, variables, ws, str(tmp_path / name), h, w, tile,
                           progress=False)
  u8 = np.load(tmp_path / "u.npy")
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "u.png")), u8)
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "u.tif"), u8)
  # Tiles are quantised as they land in the tile-row: exactly to_uint8 of the float rows.
  blocks = lambda dtype: np.concatenate(
      [b for _, b in anyscale.iter_tile_rows(model, variables, ws, h, w, tile, dtype=dtype)],
      axis=1)
  as_uint8 = blocks(np.uint8)
  assert as_uint8.dtype == np.uint8
  np.testing.assert_array_equal(as_uint8, sampling.to_uint8(blocks(np.float32)))
  np.testing.assert_array_equal(as_uint8[0], u8)
  # Values within 1e-5 may round to neighbouring uint8 levels; nearly all agree.
  diff = np.abs(u8.astype(int) - sampling.to_uint8(whole).astype(int))
  assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_integer_translation_shifts_exactly(tiny):
  model, variables, ws = tiny
  n, (dy, dx) = 32, (3, -5)
  rows, cols = anyscale.separable_coords(model, n, n, (dy, dx))
  # Coordinates come from integer indices: bit-identical to the plain image's.
  np.testing.assert_array_equal(rows[dy:], np.asarray(sampling.pixel_coords(model, range(n), n))[:n - dy])
  np.testing.assert_array_equal(cols[:dx], np.asarray(sampling.pixel_coords(model, range(n), n))[-dx:])
  plain = sampling.render(model, variables, ws, n, n)
  moved = anyscale.render_transformed(model, variables, ws, n, n, translate=(dy, dx))
  np.testing.assert_allclose(moved[:, dy:, :dx], plain[:, :n - dy, -dx:], atol=1e-6, rtol=0)
  zoomed = anyscale.render_transformed(model, variables, ws, n, n, zoom=2.0)
  assert np.isfinite(zoomed).all() and np.abs(zoomed - plain).max() > 0.1


@pytest.mark.parametrize("convention", ["linspace", "center"])
def test_rotation_0_is_plain_and_90_is_rot90(tiny, convention):
  model, variables, ws = tiny
  model = model.clone(coord_convention=convention)
  n = 32
  plain = sampling.render(model, variables, ws, n, n)[0]
  i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
  ident = anyscale.pixel_index_map(n, n, rotate=0.0)
  ys, xs = anyscale.map_coords(model, ident, n, n, i, j)
  np.testing.assert_allclose(anyscale.render_pixels(model, variables, ws, ys, xs, 256)[0],
                             plain, atol=ATOL, rtol=0)        # the per-pixel path
  np.testing.assert_allclose(anyscale.render_transformed(model, variables, ws, n, n)[0],
                             plain, atol=ATOL, rtol=0)
  for k in (1, 2, 3):
    rot = anyscale.render_transformed(model, variables, ws, n, n, rotate=90.0 * k)[0]
    np.testing.assert_allclose(rot, np.rot90(plain, k), atol=ATOL, rtol=0)


def test_one_pass_per_pixel_equals_paper_row_by_row(tiny):
  model, variables, ws = tiny
  n = 24
  warp = anyscale.elastic_displacement(jax.random.PRNGKey(1), amplitude=2.0, wavelength=12.0)
  index_map = anyscale.pixel_index_map(n, n, translate=(1.5, -2), zoom=1.3, rotate=30.0,
                                       displacement=warp)
  i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
  ys, xs = anyscale.map_coords(model, index_map, n, n, i, j)
  one_pass = anyscale.render_pixels(model, variables, ws, ys, xs, chunk=200)
  # The paper (§4.6): one generator run per output row with e^r = ys[r], e^c = xs[r],
  # keeping the diagonal of each n x n intermediate image.
  rows = []
  for r in range(n):
    img = sampling.render(model, variables, ws, n, n, rows=jnp.asarray(ys[r]),
                          cols=jnp.asarray(xs[r]))
    rows.append(img[:, np.arange(n), np.arange(n)])
  reference = np.stack(rows, axis=1)
  np.testing.assert_allclose(one_pass, reference, atol=ATOL, rtol=0)
  # Tiled per-pixel streaming gives the same image.
  blocks = [b for _, b in anyscale.iter_tile_rows(model, variables, ws, n, n, 16,
                                                  index_map=index_map, chunk=128)]
  np.testing.assert_allclose(np.concatenate(blocks, axis=1), reference, atol=ATOL, rtol=0)


def _not_pixel_independent_model():
  if "pixelfolder" in models.GENERATORS:
    return sampling.build_model(helpers.load_config("pixelfolder_ffhq.py", "tiny"))

  class StandIn:
    pixel_independent = False
    not_pixel_independent_because = "3x3 convolutions mix neighbouring pixels"
    z_dim = 8
  return StandIn()


def test_not_pixel_independent_models_refuse(tmp_path):
  model = _not_pixel_independent_model()
  ws = jnp.zeros((1, 3, 8))
  calls = [
      lambda: anyscale.stream_render(model, None, ws, str(tmp_path / "x.png"), 64, 64, 32),
      lambda: anyscale.render_transformed(model, None, ws, 32, 32, rotate=30),
      lambda: anyscale.render_transformed(model, None, ws, 32, 32, translate=(2, 0)),
      lambda: anyscale.render_pixels(model, None, ws, np.zeros((4, 4)), np.zeros((4, 4))),
      lambda: next(anyscale.iter_tile_rows(model, None, ws, 64, 64, 32)),
      lambda: generate.generate(model, None, [0], str(tmp_path), 32, 32, zoom=2.0),
  ]
  for call in calls:
    with pytest.raises(sampling.CannotTileError) as err:
      call()
    assert "not pixel-independent" in str(err.value) and "\n" not in str(err.value)
  assert not (tmp_path / "x.png").exists()


def test_scale_consistency_numbers(tiny):
  model, variables, _ = tiny
  a = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  psnr, ssim = sc.compare(a, a)
  assert np.isinf(psnr).all() and np.allclose(ssim, 1.0)
  psnr2, ssim2 = sc.compare(a, a + 0.05 * np.sign(a))
  assert (psnr2 < 40).all() and (ssim2 < 1).all()
  np.testing.assert_allclose(sc.box_downsample(np.repeat(np.repeat(a, 2, 1), 2, 2)), a)
  box = sc.scale_consistency(model, variables, num_images=2, resolution=16, batch_size=2)
  assert 10 < box["psnr"] < 100 and 0 < box["ssim"] <= 1
  assert box["convention"] == "linspace" and box["downsample"] == "box2x2"
  # Same sample positions at both scales: equal up to rounding (uint8 identical).
  point = sc.scale_consistency(model, variables, num_images=2, resolution=16, batch_size=2,
                               coord_convention="center", method="point")
  assert point["psnr"] > 60 and point["psnr"] > box["psnr"]


def test_interpolation_writes_grid_and_gif(tiny, tmp_path):
  model, variables, _ = tiny
  a, b = np.random.RandomState(0).randn(2, 16)
  np.testing.assert_allclose(anyscale.slerp(a, b, 0.0), a, atol=1e-12)
  np.testing.assert_allclose(anyscale.slerp(a, b, 1.0), b, atol=1e-12)
  grid, gif = anyscale.write_interpolation(model, variables, [0, 1, 2], 3, str(tmp_path),
                                           16, 16, batch_size=16)
  assert Image.open(grid).size == (3 * 16, 2 * 16)
  with Image.open(gif) as im:
    assert im.n_frames == 9
