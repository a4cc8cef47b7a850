"""Tests of the tfds builders, the bad-input rules and `prepare_data`."""

import errno
import hashlib
import inspect
import io
import json
import os
import pathlib
import socket
import stat
import tempfile
import threading
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


@pytest.fixture(autouse=True)
def _temp_files_in_tmp_path(tmp_path, monkeypatch):
  """tfds leaves an empty `tmp*tfds` folder per unprepared builder in the
  default temp dir; keep those inside pytest's tmp_path instead of /tmp."""
  own = tmp_path / '_tempfile'
  own.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(own))


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


# --- Unreadable and special files (the guarded readers) ----------------------

IS_ROOT = hasattr(os, 'geteuid') and os.geteuid() == 0
SPECIAL = image_io.SPECIAL_FILE


def _block_device():
  """Some block device under /dev (stat-ed only, never opened), or None."""
  for p in sorted(pathlib.Path('/dev').iterdir()):
    try:
      if stat.S_ISBLK(p.stat().st_mode):
        return p
    except OSError:
      continue
  return None


@pytest.fixture
def opened(monkeypatch):
  """Paths `os.open` was called with; a thread un-jams a FIFO opened anyway.

  The guarded reader never opens a FIFO; should it regress, a blocking open
  would hang the test forever, so the FIFOs registered in `fifos` get a
  writer after 30 s (the open then returns and the test fails instead).
  """
  paths, fifos, done = [], [], threading.Event()
  real_open = os.open

  def recording_open(path, *args, **kw):
    paths.append(os.fspath(path))
    return real_open(path, *args, **kw)

  def unjam():
    if not done.wait(30):
      for fifo in fifos:
        os.close(real_open(fifo, os.O_RDWR | os.O_NONBLOCK))

  monkeypatch.setattr(os, 'open', recording_open)
  threading.Thread(target=unjam, daemon=True).start()
  yield paths, fifos
  done.set()


def _messy_folder(src, monkeypatch):
  """Two good images next to one of each bad kind that a folder can hold.

  Returns {reason: count} of what a build must skip.
  """
  src.mkdir(parents=True)
  for name in ('good1.png', 'sub/good2.png'):
    _save(src / name, _rgb(len(name), 20, 20))
  os.symlink('missing.png', src / 'dangling.png')
  os.symlink('loop_b.png', src / 'loop_a.png')   # a loop of file links
  os.symlink('loop_a.png', src / 'loop_b.png')
  os.mkfifo(src / 'pipe.png')
  os.mkfifo(src / 'pipe.txt')                    # not an image name
  os.symlink(os.devnull, src / 'chardev.png')
  special = 3
  if _block_device() is not None:
    os.symlink(_block_device(), src / 'blockdev.png')
    special += 1
  with monkeypatch.context() as m:               # AF_UNIX paths are short
    m.chdir(src)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind('socket.png')
    sock.close()
  os.symlink('..', src / 'sub' / 'loop')         # directory link loop
  os.symlink('sub', src / 'sub_again')           # second link to one folder
  return {image_io.DANGLING_SYMLINK: 3, SPECIAL: special,
          image_io.NOT_AN_IMAGE: 1, image_io.REPEATED_FOLDER: 2}


def test_folder_link_loop_gives_each_image_once(tmp_path):
  src = tmp_path / 'three'
  for i in range(3):
    _save(src / f'{i}.png', _rgb(i, 20, 20))
  (src / 'sub').mkdir()
  os.symlink('..', src / 'sub' / 'loop')
  summary = _prepare('image_folder', src, tmp_path / 'tfds', 16)
  assert summary['written'] == {'train': 3}
  assert summary['skipped'] == {image_io.REPEATED_FOLDER: 1}
  assert summary['skipped_examples'][image_io.REPEATED_FOLDER] == ['sub/loop/']


def test_folder_links_are_followed_once_per_real_folder(tmp_path):
  src, outside = tmp_path / 'src', tmp_path / 'outside'
  _save(src / 'a.png', _rgb(0, 20, 20))
  _save(outside / 'b.png', _rgb(1, 20, 20))
  os.symlink(outside, src / 'link1')  # followed: outside is read once...
  os.symlink(outside, src / 'link2')  # ...under the first name.
  os.symlink(src, outside / 'back')   # back to the root: a loop.
  names, skipped = image_io.walk_folder(src)
  assert sorted(names) == ['a.png', 'link1/b.png']
  assert sorted(skipped) == [('link1/back/', image_io.REPEATED_FOLDER),
                             ('link2/', image_io.REPEATED_FOLDER)]


def test_build_skips_unreadable_and_special_files_in_a_folder(
    tmp_path, monkeypatch, opened):
  paths, fifos = opened
  src = tmp_path / 'messy'
  expected = _messy_folder(src, monkeypatch)
  fifos += [src / 'pipe.png', src / 'pipe.txt']
  _save(src / 'gone.png', _rgb(9, 20, 20))
  expected[image_io.VANISHED] = 1
  original = builders.ImageFolderBuilder._list_members

  def list_then_delete(self, dl_manager):  # Deleted after the listing.
    listing = original(self, dl_manager)
    (src / 'gone.png').unlink()
    return listing

  monkeypatch.setattr(builders.ImageFolderBuilder, '_list_members',
                      list_then_delete)
  summary = _prepare('image_folder', src, tmp_path / 'tfds', 16)
  assert summary['written'] == {'train': 2}
  assert summary['skipped'] == expected
  assert summary['skipped_examples'][image_io.DANGLING_SYMLINK] == [
      'dangling.png', 'loop_a.png', 'loop_b.png']
  assert summary['skipped_examples'][image_io.VANISHED] == ['gone.png']
  assert sorted(summary['skipped_examples'][image_io.REPEATED_FOLDER]) == [
      'sub/loop/', 'sub_again/']
  special_names = {'pipe.png', 'pipe.txt', 'chardev.png', 'blockdev.png',
                   'socket.png'}
  assert not special_names & {os.path.basename(p) for p in paths}
  text = prepare_data.format_summary(summary)
  assert f'{SPECIAL}: {expected[SPECIAL]}' in text
  assert 'dangling symlink: 3' in text


@pytest.fixture
def permissions_apply(tmp_path):
  """Skips where mode bits do not stop this user (root, CAP_DAC_OVERRIDE)."""
  if not IS_ROOT:
    return
  probe = tmp_path / 'probe'
  probe.write_bytes(b'x')
  probe.chmod(0)
  try:
    probe.read_bytes()
  except PermissionError:
    return  # root without CAP_DAC_OVERRIDE (e.g. under setpriv)
  finally:
    probe.unlink()
  pytest.skip('running as root: root reads files whatever their mode')


def test_permission_denied_file_and_folder_are_skipped(tmp_path,
                                                       permissions_apply):
  src = tmp_path / 'locked'
  _save(src / 'ok.png', _rgb(0, 20, 20))
  _save(src / 'secret.png', _rgb(1, 20, 20))
  _save(src / 'private' / 'x.png', _rgb(2, 20, 20))
  os.chmod(src / 'secret.png', 0)
  os.chmod(src / 'private', 0)
  try:
    summary = _prepare('image_folder', src, tmp_path / 'tfds', 16)
  finally:
    os.chmod(src / 'private', 0o755)
  assert summary['written'] == {'train': 1}
  assert summary['skipped'] == {image_io.PERMISSION_DENIED: 2}
  assert summary['skipped_examples'][image_io.PERMISSION_DENIED] == [
      'private/', 'secret.png']


def _skip_reason(fn, *args):
  with pytest.raises(image_io.SkipImage) as e:
    fn(*args)
  return e.value.reason


def test_read_file_reasons_by_os_error(tmp_path, monkeypatch):
  """Deterministic hooks in the stat -> open -> read sequence."""
  path = tmp_path / 'a.png'
  data = _encoded(_rgb(0, 8, 8), 'PNG')
  path.write_bytes(data)
  assert image_io.read_file(path) == data
  real_open, real_read = os.open, os.read

  def raising(error):
    def fake(*args, **kw):
      raise error
    return fake

  with monkeypatch.context() as m:  # What root never sees for real.
    m.setattr(os, 'open', raising(PermissionError(errno.EACCES, 'no')))
    assert _skip_reason(image_io.read_file, path) == image_io.PERMISSION_DENIED
  with monkeypatch.context() as m:  # Deleted between stat and open.
    def delete_then_open(p, *args, **kw):
      os.unlink(p)
      return real_open(p, *args, **kw)
    m.setattr(os, 'open', delete_then_open)
    assert _skip_reason(image_io.read_file, path) == image_io.VANISHED
  path.write_bytes(data)
  with monkeypatch.context() as m:  # Replaced between stat and open.
    def replace_then_open(p, *args, **kw):
      (tmp_path / 'new.png').write_bytes(data)
      os.replace(tmp_path / 'new.png', p)
      return real_open(p, *args, **kw)
    m.setattr(os, 'open', replace_then_open)
    assert _skip_reason(image_io.read_file, path) == image_io.VANISHED
  with monkeypatch.context() as m:  # Truncated while being read.
    def truncate_then_read(fd, n):
      os.truncate(path, 10)
      return real_read(fd, n)
    m.setattr(os, 'read', truncate_then_read)
    assert _skip_reason(image_io.read_file, path) == image_io.VANISHED
  path.write_bytes(data)
  with monkeypatch.context() as m:  # An I/O error (bad disk, NFS).
    m.setattr(os, 'read', raising(OSError(errno.EIO, 'Input/output error')))
    assert _skip_reason(image_io.read_file, path) == image_io.UNREADABLE
  with monkeypatch.context() as m:  # A stale NFS handle.
    m.setattr(os, 'read', raising(OSError(errno.ESTALE, 'Stale handle')))
    assert _skip_reason(image_io.read_file, path) == image_io.VANISHED
  assert image_io.read_file(path) == data


def test_read_file_never_opens_special_files(tmp_path, opened):
  paths, fifos = opened
  os.mkfifo(tmp_path / 'p.png')
  fifos.append(tmp_path / 'p.png')
  os.symlink(os.devnull, tmp_path / 'c.png')
  (tmp_path / 'd.png').mkdir()
  for name in ('p.png', 'c.png', 'd.png'):
    assert (_skip_reason(image_io.read_file, tmp_path / name) ==
            image_io.SPECIAL_FILE)
  assert paths == []


def test_unlistable_folder_is_skipped_with_its_reason(tmp_path, monkeypatch):
  """What root never sees for real: a sub-folder whose listing fails."""
  _save(tmp_path / 'src' / 'a.png', _rgb(0, 8, 8))
  _save(tmp_path / 'src' / 'locked' / 'b.png', _rgb(1, 8, 8))
  _save(tmp_path / 'src' / 'flaky' / 'c.png', _rgb(2, 8, 8))
  real_scan = image_io._scan_dir  # pylint: disable=protected-access
  errors = {'locked': PermissionError(errno.EACCES, 'Permission denied'),
            'flaky': OSError(errno.EIO, 'Input/output error')}

  def scan(path):
    if os.path.basename(path) in errors:
      raise errors[os.path.basename(path)]
    return real_scan(path)

  monkeypatch.setattr(image_io, '_scan_dir', scan)
  names, skipped = image_io.walk_folder(tmp_path / 'src')
  assert names == ['a.png']
  assert sorted(skipped) == [('flaky/', image_io.UNREADABLE),
                             ('locked/', image_io.PERMISSION_DENIED)]
  errors['src'] = PermissionError(errno.EACCES, 'Permission denied')
  with pytest.raises(ValueError, match='cannot be listed: Permission denied'):
    image_io.walk_folder(tmp_path / 'src')


def test_special_missing_or_broken_source_is_a_one_line_error(tmp_path):
  os.mkfifo(tmp_path / 'fifo.zip')
  with pytest.raises(ValueError, match='is a FIFO: pass a folder'):
    image_io.list_source(tmp_path / 'fifo.zip')
  os.symlink('nowhere', tmp_path / 'dangling')
  with pytest.raises(ValueError, match='does not exist'):
    image_io.list_source(tmp_path / 'dangling')
  (tmp_path / 'broken.zip').write_bytes(b'PK\x03\x04 not really')
  with pytest.raises(ValueError, match='not a readable zip'):
    image_io.list_source(tmp_path / 'broken.zip')


def _zip_entry(z, name, data=b'', mode=None, **attrs):
  info = zipfile.ZipInfo(name)
  if mode is not None:
    info.create_system = 3  # Unix: the mode is stored in external_attr.
    info.external_attr = mode << 16
  for k, v in attrs.items():
    setattr(info, k, v)
  z.writestr(info, data)


def _patch_central_header(path, name, field_offset, value: bytes):
  """Overwrites a field of `name`'s central-directory record in a zip."""
  raw = bytearray(path.read_bytes())
  start = 0
  while True:
    start = raw.index(b'PK\x01\x02', start)
    n = int.from_bytes(raw[start + 28:start + 30], 'little')
    if raw[start + 46:start + 46 + n] == name.encode():
      break
    start += 4
  raw[start + field_offset:start + field_offset + len(value)] = value
  path.write_bytes(bytes(raw))


def test_zip_with_links_and_special_entries(tmp_path):
  """The zip form: what a zip can hold of the folder form's bad kinds."""
  zpath = tmp_path / 'weird.zip'
  good = _encoded(_rgb(1, 20, 20), 'PNG')
  bad_crc = _encoded(_rgb(2, 20, 20), 'PNG')
  with zipfile.ZipFile(zpath, 'w') as z:
    _zip_entry(z, 'good.png', good, mode=stat.S_IFREG | 0o644)
    _zip_entry(z, 'plain.png', good)  # no Unix mode (e.g. made on Windows)
    _zip_entry(z, 'link.png', b'good.png', mode=stat.S_IFLNK | 0o777)
    _zip_entry(z, 'dirlink', b'..', mode=stat.S_IFLNK | 0o777)
    _zip_entry(z, 'pipe.png', mode=stat.S_IFIFO | 0o644)
    _zip_entry(z, 'chardev.png', mode=stat.S_IFCHR | 0o644)
    _zip_entry(z, 'blockdev.png', mode=stat.S_IFBLK | 0o644)
    _zip_entry(z, 'socket.png', mode=stat.S_IFSOCK | 0o644)
    _zip_entry(z, 'folder_without_slash', mode=stat.S_IFDIR | 0o755)
    _zip_entry(z, 'secret.png', good)
    _zip_entry(z, 'bad_crc.png', bad_crc)
    _zip_entry(z, 'aes.png', good)
  raw = zpath.read_bytes()  # Flip one byte of bad_crc.png's stored data.
  at = raw.index(bad_crc) + len(bad_crc) // 2
  zpath.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
  _patch_central_header(zpath, 'secret.png', 8, b'\x01\x00')  # encrypted
  _patch_central_header(zpath, 'aes.png', 10, b'\x63\x00')  # method 99
  summary = _prepare('image_folder', zpath, tmp_path / 'tfds', 16)
  assert summary['written'] == {'train': 2}
  assert summary['skipped'] == {
      image_io.ZIP_SYMLINK: 1, image_io.NOT_AN_IMAGE: 1, SPECIAL: 4,
      image_io.ZIP_ENCRYPTED: 1, image_io.CORRUPT: 1, image_io.UNREADABLE: 1}
  assert summary['skipped_examples'][image_io.NOT_AN_IMAGE] == ['dirlink']
  assert summary['skipped_examples'][SPECIAL] == [
      'blockdev.png', 'chardev.png', 'pipe.png', 'socket.png']
  images = data.load_images(_cfg('image_folder', tmp_path / 'tfds', 16,
                                 source=str(zpath)))
  np.testing.assert_array_equal(images[0], _expected(good, 16))
  np.testing.assert_array_equal(images[1], _expected(good, 16))


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
