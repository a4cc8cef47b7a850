"""Tests of the tfds builders, the bad-input rules and `prepare_data`."""

import hashlib
import inspect
import io
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
import pytest

from gen_synth import data
from gen_synth import datasets
from gen_synth import prepare_data
from gen_synth.datasets import builders
from gen_synth.datasets import demo_photos
from gen_synth.datasets import image_io

CELEBA_BOX = (15, 35, 163, 183)


def _rgb(seed, h, w):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _save(path, array, fmt=None, mode=None):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  im = Image.fromarray(array)
  if mode:
    im = im.convert(mode)
  im.save(path, format=fmt)
  return path


def _encoded(array, fmt, mode=None):
  buf = io.BytesIO()
  im = Image.fromarray(array)
  (im.convert(mode) if mode else im).save(buf, format=fmt)
  return buf.getvalue()


def _expected(path_or_bytes, resolution, box=None):
  """Independent recipe: PIL RGB -> crop -> LANCZOS (as in the data README)."""
  if isinstance(path_or_bytes, bytes):
    path_or_bytes = io.BytesIO(path_or_bytes)
  im = Image.open(path_or_bytes).convert('RGB')
  if box is None:
    w, h = im.size
    c = min(w, h)
    box = ((w - c) // 2, (h - c) // 2, (w - c) // 2 + c, (h - c) // 2 + c)
  im = im.crop(box).resize((resolution, resolution), Image.LANCZOS)
  return np.asarray(im, np.uint8)


def _cfg(name, data_dir, resolution, **kw):
  c = data.default_data_config()
  c.name, c.data_dir, c.resolution = name, str(data_dir), resolution
  for k, v in kw.items():
    c[k] = v
  return c


def _prepare(name, source, data_dir, resolution, **kw):
  return prepare_data.prepare_dataset(
      name, source=str(source) if source else None, resolution=resolution,
      data_dir=str(data_dir), progress=False, num_workers=2, **kw)


def _tree_digest(path):
  """{relative file: sha256} of a build directory."""
  path = pathlib.Path(path)
  return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(path.rglob('*')) if p.is_file()}


# --- Builders on generated images ---------------------------------------------


def test_folder_build_splits_order_and_pixels(tmp_path):
  src = tmp_path / 'photos'
  files = {
      'train/b.png': _rgb(1, 40, 30),   # portrait: centre square crop
      'train/a.jpg': _rgb(2, 30, 50),   # landscape, JPEG
      'cats/deep/c.png': _rgb(3, 24, 24),  # not a split folder -> train
      'test/d.png': _rgb(4, 32, 32),
      'loose.png': _rgb(5, 20, 22),     # top level -> train
  }
  for name, arr in files.items():
    _save(src / name, arr)
  summary = _prepare('image_folder', src, tmp_path / 'tfds', 16)
  assert summary['built']
  assert summary['written'] == {'train': 4, 'test': 1}
  assert summary['skipped'] == {}

  c = _cfg('image_folder', tmp_path / 'tfds', 16, source=str(src))
  train = data.load_images(c, 'train')
  assert train.shape == (4, 16, 16, 3) and train.dtype == np.uint8
  order = sorted(n for n in files if not n.startswith('test/'))
  for got, name in zip(train, order):
    np.testing.assert_array_equal(got, _expected(src / name, 16))
  np.testing.assert_array_equal(data.load_images(c, 'test')[0],
                                _expected(src / 'test/d.png', 16))


def test_crop_size_equals_centre_crop_box(tmp_path):
  src = tmp_path / 'faces'
  for i in range(3):
    _save(src / f'{i:03d}.jpg', _rgb(i, 218, 178))
  d = tmp_path / 'tfds'
  by_size = _prepare('image_folder', src, d, 32, crop_size=148)
  by_box = _prepare('image_folder', src, d, 32, crop_box=CELEBA_BOX)
  assert by_size['path'] != by_box['path']  # Both builds coexist.
  a = data.load_images(_cfg('image_folder', d, 32, source=str(src),
                            crop_size=148))
  b = data.load_images(_cfg('image_folder', d, 32, source=str(src),
                            crop_box=CELEBA_BOX))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      a[1], _expected(src / '001.jpg', 32, box=CELEBA_BOX))


def test_resolutions_coexist_in_one_data_dir(tmp_path):
  src = tmp_path / 'imgs'
  for i in range(2):
    _save(src / f'{i}.png', _rgb(i, 40, 40))
  d = tmp_path / 'tfds'
  _prepare('ffhq', src, d, 16)
  _prepare('ffhq', src, d, 32)
  assert data.load_images(_cfg('ffhq', d, 16)).shape == (2, 16, 16, 3)
  assert data.load_images(_cfg('ffhq', d, 32)).shape == (2, 32, 32, 3)


@pytest.mark.parametrize('name', ['ffhq', 'lsun_church', 'metfaces',
                                  'flickr_scenery'])
def test_paper_dataset_builders(tmp_path, name):
  src = tmp_path / 'download'
  for i in range(3):
    _save(src / 'sub' / f'{i:05d}.png', _rgb(i, 24, 30))
  summary = _prepare(name, src, tmp_path / 'tfds', 16)
  assert summary['tfds_name'] == f'gs_{name}/r16'
  assert summary['written'] == {'train': 3}


def test_registered_names_do_not_clash():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  registered = set(tfds.list_builders())
  for name, cls in datasets.DATASETS.items():
    assert cls.name == f'gs_{name}'
    assert cls.name not in {'lsun', 'celeb_a', 'celeb_a_hq', 'ffhq'}
  assert 'lsun' in registered  # tfds' own, untouched.


# --- Bad input rules (unit level) ---------------------------------------------


def test_truncated_and_corrupt_files_are_skipped():
  arr = _rgb(0, 64, 64)
  for fmt in ('JPEG', 'PNG'):
    enc = _encoded(arr, fmt)
    for bad in (enc[:len(enc) // 2], b'\x00garbage' + enc[20:]):
      with pytest.raises(image_io.SkipImage) as e:
        image_io.decode_rgb(bad)
      assert e.value.reason == image_io.CORRUPT


def test_grayscale_becomes_rgb():
  gray = _rgb(0, 8, 8)[..., 0]
  im = image_io.decode_rgb(_encoded(gray, 'PNG'))
  out = np.asarray(im)
  assert im.mode == 'RGB'
  for ch in range(3):
    np.testing.assert_array_equal(out[..., ch], gray)


def test_rgba_is_composited_on_white():
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (10, 20, 30, 255)   # opaque: kept
  rgba[0, 1] = (10, 20, 30, 0)     # transparent: white
  rgba[1, 0] = (0, 0, 0, 128)      # half: grey ~ 127
  out = np.asarray(image_io.decode_rgb(_encoded(rgba, 'PNG')))
  np.testing.assert_array_equal(out[0, 0], (10, 20, 30))
  np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
  assert np.all(np.abs(out[1, 0].astype(int) - 127) <= 1)


def test_cmyk_becomes_rgb():
  arr = _rgb(3, 16, 16)
  enc = _encoded(arr, 'JPEG', mode='CMYK')
  assert Image.open(io.BytesIO(enc)).mode == 'CMYK'
  out = image_io.decode_rgb(enc)
  assert out.mode == 'RGB'
  np.testing.assert_array_equal(
      np.asarray(out), np.asarray(Image.open(io.BytesIO(enc)).convert('RGB')))


def test_16_bit_png_is_scaled_to_8_bit():
  a16 = np.array([[0, 257, 32896, 65535]], np.uint16)
  buf = io.BytesIO()
  Image.fromarray(a16).save(buf, format='PNG')
  assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith('I')
  out = np.asarray(image_io.decode_rgb(buf.getvalue()))
  np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_palette_images_become_rgb():
  im = Image.fromarray(_rgb(4, 8, 8)).convert('P', palette=Image.ADAPTIVE)
  buf = io.BytesIO()
  im.save(buf, format='PNG')
  out = image_io.decode_rgb(buf.getvalue())
  np.testing.assert_array_equal(np.asarray(out), np.asarray(im.convert('RGB')))
  # Transparent palette index -> white.
  p = Image.new('P', (2, 1))
  p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
  p.putpixel((0, 0), 0)
  p.putpixel((1, 0), 1)
  buf = io.BytesIO()
  p.save(buf, format='PNG', transparency=1)
  out = np.asarray(image_io.decode_rgb(buf.getvalue()))
  np.testing.assert_array_equal(out[0], [(255, 0, 0), (255, 255, 255)])


def test_small_images_are_skipped_unless_upsampling():
  im = Image.fromarray(_rgb(0, 10, 12))
  with pytest.raises(image_io.SkipImage) as e:
    image_io.preprocess(im, resolution=16)
  assert e.value.reason == image_io.SMALLER_THAN_RESOLUTION
  out = image_io.preprocess(im, resolution=16, allow_upsample=True)
  assert out.shape == (16, 16, 3)
  with pytest.raises(image_io.SkipImage) as e:
    image_io.preprocess(im, resolution=4, crop_box=(0, 0, 11, 11))
  assert e.value.reason == image_io.BOX_OUTSIDE
  with pytest.raises(image_io.SkipImage) as e:
    image_io.preprocess(im, resolution=4, crop_size=11)
  assert e.value.reason == image_io.SMALLER_THAN_CROP


def test_non_square_crop_box_is_an_error():
  with pytest.raises(ValueError, match='square'):
    datasets.make_config('ffhq', resolution=16, crop_box=(0, 0, 10, 20))


# --- Bad input rules (through a build) -------------------------------------


def test_build_converts_or_skips_every_bad_kind(tmp_path):
  src = tmp_path / 'messy'
  src.mkdir()
  ok = _rgb(0, 24, 24)
  jpg, png = _encoded(ok, 'JPEG'), _encoded(ok, 'PNG')
  (src / 'good.png').write_bytes(png)
  (src / 'trunc.jpg').write_bytes(jpg[:len(jpg) // 2])
  (src / 'trunc.png').write_bytes(png[:len(png) // 2])
  (src / 'fake.jpg').write_bytes(b'this is text, not a jpeg')
  (src / 'notes.txt').write_text('hello')
  (src / '.DS_Store').write_bytes(b'\x00\x01')
  _save(src / 'gray.png', ok[..., 0])
  _save(src / 'rgba.png', np.dstack([ok, np.full((24, 24), 200, np.uint8)]))
  _save(src / 'cmyk.jpg', ok, mode='CMYK')
  _save(src / 'pal.png', ok, mode='P')
  Image.fromarray(ok[..., 0].astype(np.uint16) * 257).save(src / 'deep.png')
  _save(src / 'tiny.png', _rgb(1, 8, 8))
  summary = _prepare('image_folder', src, tmp_path / 'tfds', 16)
  assert summary['written'] == {'train': 6}
  assert summary['skipped'] == {
      image_io.CORRUPT: 3, image_io.NOT_AN_IMAGE: 2,
      image_io.SMALLER_THAN_RESOLUTION: 1}
  assert summary['skipped_examples'][image_io.CORRUPT] == [
      'fake.jpg', 'trunc.jpg', 'trunc.png']
  # The 16-bit file equals the 8-bit grayscale one after the documented rule.
  images = data.load_images(_cfg('image_folder', tmp_path / 'tfds', 16,
                                 source=str(src)))
  names = ['cmyk.jpg', 'deep.png', 'good.png', 'gray.png', 'pal.png',
           'rgba.png']
  np.testing.assert_array_equal(images[names.index('deep.png')],
                                images[names.index('gray.png')])
  text = prepare_data.format_summary(summary)
  assert 'corrupt or truncated: 3' in text and 'train 6' in text


def test_zip_with_mixed_content(tmp_path):
  zpath = tmp_path / 'mixed.zip'
  with zipfile.ZipFile(zpath, 'w') as z:
    z.writestr('train/001.png', _encoded(_rgb(1, 20, 20), 'PNG'))
    z.writestr('train/sub/002.jpg', _encoded(_rgb(2, 20, 20), 'JPEG'))
    z.writestr('holdout/003.png', _encoded(_rgb(3, 20, 20), 'PNG'))
    z.writestr('holdout/004.jpg', b'not a jpeg')
    z.writestr('index.csv', 'path,split\n')
    z.writestr('__MACOSX/train/._001.png', b'\x00\x05\x16\x07')
    z.writestr('docs/', '')  # A directory entry.
    z.writestr('docs/README', 'text')
  summary = _prepare('image_folder', zpath, tmp_path / 'tfds', 16)
  assert summary['written'] == {'train': 2, 'holdout': 1}
  assert summary['skipped'] == {image_io.NOT_AN_IMAGE: 3, image_io.CORRUPT: 1}
  got = data.load_images(_cfg('image_folder', tmp_path / 'tfds', 16,
                              source=str(zpath)), 'holdout')
  np.testing.assert_array_equal(
      got[0], _expected(_encoded(_rgb(3, 20, 20), 'PNG'), 16))


def test_empty_missing_and_unusable_sources(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'text_only').mkdir()
  (tmp_path / 'text_only' / 'a.txt').write_text('x')
  (tmp_path / 'all_bad').mkdir()
  (tmp_path / 'all_bad' / 'a.png').write_bytes(b'broken')
  d = tmp_path / 'tfds'
  cases = {'empty': 'holds no images', 'text_only': 'holds no images',
           'missing': 'does not exist', 'all_bad': 'no usable images'}
  for folder, message in cases.items():
    with pytest.raises(ValueError, match=message) as e:
      _prepare('metfaces', tmp_path / folder, d, 16)
    assert '\n' not in str(e.value)
  # Nothing (not even a partial build) was left for the failed datasets.
  assert not list((d / 'gs_metfaces').glob('*/1.0.0'))


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(ValueError, match='unknown dataset'):
    _prepare('imagenet', tmp_path, tmp_path / 'tfds', 16)
  with pytest.raises(ValueError, match='unknown dataset'):
    data.load_images(_cfg('imagenet', tmp_path / 'tfds', 16))


def test_cli_errors_are_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  r = subprocess.run(
      [sys.executable, '-m', 'gen_synth.prepare_data', '--dataset=celeba',
       f'--source={tmp_path}', f'--data_dir={tmp_path}'],
      capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 1
  errors = [l for l in r.stderr.splitlines() if 'prepare_data' in l]
  assert errors == ["prepare_data: error: unknown dataset 'celeba'; choose one "
                    'of demo_photos, ffhq, flickr_scenery, image_folder, '
                    'lsun_church, metfaces.']
  assert 'Traceback' not in r.stderr


# --- Interrupted and repeated builds -----------------------------------------


def _source_of(tmp_path, n=6):
  src = tmp_path / 'src'
  for i in range(n):
    _save(src / f'{i:02d}.png', _rgb(i, 20, 20))
  return src


def _contents(data_dir, src):
  c = _cfg('image_folder', data_dir, 16, source=str(src))
  builder = data.get_builder(c)
  names = [r['file_name'] for r in data._split_source(builder, 'train')]
  return names, data.load_images(c)


def test_interrupted_build_then_rebuild_gives_same_dataset(tmp_path,
                                                           monkeypatch):
  src = _source_of(tmp_path)
  clean_dir, dirty_dir = tmp_path / 'clean', tmp_path / 'dirty'
  _prepare('image_folder', src, clean_dir, 16)

  # 1) A build killed half-way (exception inside generation).
  calls = {'n': 0}
  original = builders.ImageFolderBuilder._process

  def dying_process(self, member):
    calls['n'] += 1
    if calls['n'] == 4:
      raise KeyboardInterrupt('simulated kill')
    return original(self, member)

  monkeypatch.setattr(builders.ImageFolderBuilder, '_process', dying_process)
  with pytest.raises(KeyboardInterrupt):
    _prepare('image_folder', src, dirty_dir, 16)
  monkeypatch.setattr(builders.ImageFolderBuilder, '_process', original)
  cfg = datasets.make_config('image_folder', resolution=16, source=str(src))
  assert not datasets.is_prepared(
      datasets.make_builder('image_folder', cfg, data_dir=str(dirty_dir)))

  # 2) A SIGKILL leaves tfds' temporary dir behind, half written.
  version_dir = dirty_dir / 'gs_image_folder' / cfg.name
  stale = version_dir / 'incomplete.ABC123_1.0.0'
  stale.mkdir(parents=True)
  (stale / 'gs_image_folder-train.array_record-00000-of-00001').write_bytes(
      b'partial')

  summary = _prepare('image_folder', src, dirty_dir, 16)
  assert summary['built'] and summary['written'] == {'train': 6}
  names_a, images_a = _contents(clean_dir, src)
  names_b, images_b = _contents(dirty_dir, src)
  assert names_a == names_b
  np.testing.assert_array_equal(images_a, images_b)


def test_rerun_over_complete_build_changes_nothing(tmp_path):
  src = _source_of(tmp_path)
  d = tmp_path / 'tfds'
  first = _prepare('image_folder', src, d, 16)
  before = _tree_digest(first['path'])
  _save(src / '99.png', _rgb(99, 20, 20))  # The source changed meanwhile.
  second = _prepare('image_folder', src, d, 16)
  assert not second['built']
  assert second['written'] == first['written']
  assert second['skipped'] == first['skipped']
  assert _tree_digest(first['path']) == before
  report = json.loads((pathlib.Path(first['path']) / 'metadata.json')
                      .read_text())['report']
  assert report['written'] == {'train': 6}


# --- Demo photos -------------------------------------------------------------


def test_demo_photo_licences_are_cc0_or_public_domain():
  import skimage.data  # pylint: disable=g-import-not-at-top
  for name in demo_photos.PHOTOS:
    doc = inspect.getdoc(getattr(skimage.data, name)).lower()
    assert 'cc0' in doc or 'public domain' in doc, name
    assert name in demo_photos.__doc__
  photos = demo_photos.load_photos()
  assert all(p.ndim == 3 and p.shape[2] == 3 for p in photos.values())


def test_demo_photos_deterministic_given_seed(tmp_path):
  kw = dict(num_crops=12, demo_crop_size=32)
  a = _prepare('demo_photos', None, tmp_path / 'a', 16, **kw)
  b = _prepare('demo_photos', None, tmp_path / 'b', 16, **kw)
  c = _prepare('demo_photos', None, tmp_path / 'c', 16, demo_seed=1, **kw)
  assert a['written'] == {'train': 12}
  load = lambda d, s: data.load_images(_cfg(
      'demo_photos', d, 16, num_demo_crops=12, demo_crop_size=32,
      demo_seed=s))
  np.testing.assert_array_equal(load(tmp_path / 'a', 0),
                                load(tmp_path / 'b', 0))
  assert not np.array_equal(load(tmp_path / 'a', 0), load(tmp_path / 'c', 1))
  assert a['tfds_name'] == 'gs_demo_photos/r16_n12_c32_s0'
  del b, c


def test_demo_crop_positions_inside_photos():
  shapes = {'x': (40, 50), 'y': (30, 30)}
  pos = demo_photos.crop_positions(shapes, num_crops=50, crop_size=30, seed=3)
  assert pos == demo_photos.crop_positions(shapes, num_crops=50, crop_size=30,
                                           seed=3)
  for name, top, left in pos:
    h, w = shapes[name]
    assert 0 <= top <= h - 30 and 0 <= left <= w - 30
  assert {p[0] for p in pos} == {'x', 'y'}


# --- Real images from ../shared/data (skipped where absent) -------------------


@pytest.fixture
def celeba_build(shared_data_dir, tmp_path_factory):
  """The CelebA zip built at 64 px with the README recipe, once per session.

  The build goes to one session-wide data_dir; later calls find it complete
  and reuse it (`built` is False then), so the 6,000 JPEGs decode once.
  """
  src = shared_data_dir / 'celeba_align_6000.zip'
  d = tmp_path_factory.getbasetemp() / 'celeba_tfds'
  summary = _prepare('image_folder', src, d, 64, crop_box=CELEBA_BOX)
  return summary, _cfg('image_folder', d, 64, source=str(src),
                       crop_box=CELEBA_BOX)


def test_celeba_zip_splits_and_skips(celeba_build):
  summary, _ = celeba_build
  assert summary['written'] == {'train': 5190, 'holdout': 810}
  assert summary['skipped'] == {image_io.NOT_AN_IMAGE: 1}
  assert summary['skipped_examples'][image_io.NOT_AN_IMAGE] == ['index.csv']


def test_celeba_holdout_reproduces_reference_npz(celeba_build,
                                                 shared_data_dir):
  _, c = celeba_build
  ref = np.load(shared_data_dir / 'faces_64_holdout.npz')
  ids = ref['holdout_celeba_file_id']
  assert np.all(np.diff(ids) > 0)  # Sorted ascending = file-name order.
  got = data.load_images(c, 'holdout')
  assert got.shape == (810, 64, 64, 3)
  np.testing.assert_array_equal(got, ref['holdout'])  # Bit-for-bit.


def test_celeba_train_matches_readme_recipe(celeba_build, shared_data_dir):
  _, c = celeba_build
  z = zipfile.ZipFile(shared_data_dir / 'celeba_align_6000.zip')
  names = sorted(n for n in z.namelist() if n.startswith('train/'))[:4]
  got = data.load_images(c, 'train', max_images=4)
  for image, name in zip(got, names):
    np.testing.assert_array_equal(image,
                                  _expected(z.read(name), 64, CELEBA_BOX))
