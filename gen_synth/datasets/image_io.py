"""Reading user images robustly: listing a folder or zip, decoding, cropping.

Everything here is plain Python / numpy / Pillow (no TensorFlow) so the rules
can be unit-tested on their own. The tfds builders in this package call
`list_source` once (to split files into tfds splits and count non-images) and
`load_and_preprocess` per file (decode, convert to RGB, crop, resize).

Bad-input rules (also in docs/data.md):

* File kinds: only names ending in one of `IMAGE_EXTENSIONS` are decoded.
  Anything else (`index.csv`, `.txt`, ...), hidden files (`.DS_Store`) and
  macOS `__MACOSX/` zip metadata are skipped with reason `not an image file`.
* Truncated or corrupt files (JPEG, PNG, ...) are skipped:
  `corrupt or truncated`. Pillow is never told to accept truncated files.
* Colour modes are converted to 8-bit RGB:
  - `L` (grayscale), `P` (palette), `CMYK`, `YCbCr`, `LAB`, `HSV`: Pillow's
    `convert('RGB')`;
  - anything with transparency (`RGBA`, `LA`, `PA`, `P` with a transparent
    index, `RGBa`): alpha-composited on a white background;
  - 16-bit / 32-bit integer grayscale (`I;16*`, `I`): scaled to 8 bit with
    `round(v * 255 / 65535)` (values clipped to [0, 65535]), then gray -> RGB;
  - 16-bit RGB PNGs are reduced to 8 bit by Pillow itself when decoding;
  - other modes (`F`, `1` is fine, ...): `1` is converted, `F` is skipped with
    `unsupported image mode F`.
* Orientation: the EXIF orientation tag is applied (`ImageOps.exif_transpose`)
  so phone photos are upright. Multi-frame files (GIF, TIFF) use frame 0.
* Crop: `crop_box=(left, top, right, bottom)` (must be square), or a centre
  crop of `crop_size` x `crop_size` at `((W - c) // 2, (H - c) // 2)`, or (no
  crop given) a centre crop to the largest square. A box outside the image is
  skipped (`crop box outside image`), as is an image smaller than `crop_size`
  (`smaller than crop_size`).
* Resolution: the cropped square is resized to `resolution` with
  `Image.LANCZOS`. A crop smaller than `resolution` is skipped
  (`smaller than resolution`) unless `allow_upsample=True` (then it is
  upsampled with LANCZOS too); upsampled images only add blur to a GAN's
  training set, so skipping is the default.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import os
import pathlib
import zipfile
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from PIL import ImageOps

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif',
                    '.tiff', '.ppm', '.pgm')
# Top-level folder names of a source that become tfds splits of that name.
SPLIT_FOLDERS = ('train', 'validation', 'test', 'holdout')
DEFAULT_SPLIT = 'train'

# Skip reasons (keys of the build report).
NOT_AN_IMAGE = 'not an image file'
CORRUPT = 'corrupt or truncated'
UNSUPPORTED_MODE = 'unsupported image mode'
BOX_OUTSIDE = 'crop box outside image'
SMALLER_THAN_CROP = 'smaller than crop_size'
SMALLER_THAN_RESOLUTION = 'smaller than resolution'


class SkipImage(Exception):
  """Raised for a file that is skipped; `reason` is one of the constants."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Member:
  """One candidate image of a source: a name and a way to read its bytes."""
  name: str  # Path relative to the source root, '/'-separated.
  read_bytes: Callable[[], bytes]


@dataclasses.dataclass
class SourceListing:
  """What `list_source` found: image candidates per split and skipped files."""
  splits: dict[str, list[Member]]
  skipped: list[tuple[str, str]]  # (name, reason)


def _is_image_name(name: str) -> bool:
  parts = name.split('/')
  if any(p.startswith('.') or p == '__MACOSX' for p in parts):
    return False
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _split_of(name: str) -> str:
  top = name.split('/', 1)[0]
  return top if ('/' in name and top in SPLIT_FOLDERS) else DEFAULT_SPLIT


def _zip_reader(zf: zipfile.ZipFile, name: str) -> Callable[[], bytes]:
  # ZipFile serialises reads of its shared file handle with a lock, so these
  # readers may be called from worker threads.
  return lambda: zf.read(name)


def _file_reader(path: pathlib.Path) -> Callable[[], bytes]:
  return path.read_bytes


def _list_names(source: pathlib.Path,
                ) -> tuple[list[str], Callable[[str], Callable[[], bytes]]]:
  """All file names under `source` (a folder or a .zip) and a reader factory."""
  if source.is_file():
    if not zipfile.is_zipfile(source):
      raise ValueError(f'--source={source} is a file but not a zip archive: '
                       'pass a folder of images or a .zip of images.')
    zf = zipfile.ZipFile(source)
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    return names, lambda n: _zip_reader(zf, n)
  names = []
  for dirpath, _, filenames in os.walk(source, followlinks=True):
    rel = pathlib.Path(dirpath).relative_to(source)
    names.extend((rel / f).as_posix() for f in filenames)
  return names, lambda n: _file_reader(source / n)


def list_source(source: str | os.PathLike) -> SourceListing:
  """Lists the image candidates of a folder tree or a zip, sorted by name.

  Images under a top-level folder named one of `SPLIT_FOLDERS` go to that
  split; all other images go to `train`. Non-image files are returned in
  `skipped` with reason `NOT_AN_IMAGE`.

  Raises:
    ValueError: the source is missing, not a folder/zip, or holds no file with
      an image extension (one-line messages meant for the user).
  """
  path = pathlib.Path(source).expanduser()
  if not path.exists():
    raise ValueError(f'--source={source} does not exist: pass the folder (or '
                     '.zip) that holds the downloaded images.')
  names, reader = _list_names(path)
  splits = collections.defaultdict(list)
  skipped = []
  for name in sorted(names):
    if _is_image_name(name):
      splits[_split_of(name)].append(Member(name, reader(name)))
    else:
      skipped.append((name, NOT_AN_IMAGE))
  if not splits:
    what = f'{len(names)} files, none an image' if names else 'it is empty'
    raise ValueError(f'--source={source} holds no images ({what}); point it at '
                     f'a folder or zip of {"/".join(IMAGE_EXTENSIONS)} files.')
  return SourceListing(dict(splits), skipped)


def _int_gray_to_uint8(im: Image.Image) -> np.ndarray:
  """[H, W] uint8 from a 16/32-bit integer grayscale image (`I;16*`, `I`)."""
  a = np.asarray(im).astype(np.float64)
  return np.round(np.clip(a, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
  """Converts any supported Pillow mode to 8-bit RGB (rules: module doc)."""
  if im.mode == 'RGB':
    return im
  if im.mode.startswith('I'):
    return Image.fromarray(_int_gray_to_uint8(im), mode='L').convert('RGB')
  if im.mode == 'F':
    raise SkipImage(UNSUPPORTED_MODE, 'F')
  has_alpha = im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
      im.mode == 'P' and 'transparency' in im.info)
  if has_alpha:
    rgba = im.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  try:
    return im.convert('RGB')
  except ValueError as e:
    raise SkipImage(UNSUPPORTED_MODE, im.mode) from e


def decode_rgb(data: bytes) -> Image.Image:
  """Decodes encoded image bytes to an upright 8-bit RGB Pillow image."""
  try:
    im = Image.open(io.BytesIO(data))
    im.load()  # Forces a full decode: truncated data raises OSError here.
    im = ImageOps.exif_transpose(im)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise SkipImage(CORRUPT, str(e)) from e
  return to_rgb(im)


def crop_square(im: Image.Image, *, crop_size: int | None = None,
                crop_box: Sequence[int] | None = None) -> Image.Image:
  """Crops with `crop_box`, a centre `crop_size` crop, or the largest square."""
  w, h = im.size
  if crop_box is not None:
    l, t, r, b = crop_box
    if l < 0 or t < 0 or r > w or b > h:
      raise SkipImage(BOX_OUTSIDE, f'{tuple(crop_box)} vs {w}x{h}')
    box = (l, t, r, b)
  else:
    c = crop_size if crop_size is not None else min(w, h)
    if c > w or c > h:
      raise SkipImage(SMALLER_THAN_CROP, f'{w}x{h} < {c}')
    l, t = (w - c) // 2, (h - c) // 2
    box = (l, t, l + c, t + c)
  if box == (0, 0, w, h):
    return im
  return im.crop(box)


def resize_square(im: Image.Image, resolution: int, *,
                  allow_upsample: bool = False) -> np.ndarray:
  """LANCZOS resize of a square image -> uint8 [resolution, resolution, 3]."""
  if im.size[0] < resolution and not allow_upsample:
    raise SkipImage(SMALLER_THAN_RESOLUTION, f'{im.size[0]} < {resolution}')
  if im.size != (resolution, resolution):
    im = im.resize((resolution, resolution), Image.LANCZOS)
  return np.asarray(im, dtype=np.uint8)


def preprocess(im: Image.Image, *, resolution: int,
               crop_size: int | None = None,
               crop_box: Sequence[int] | None = None,
               allow_upsample: bool = False) -> np.ndarray:
  """RGB image -> crop -> LANCZOS resize -> uint8 [R, R, 3]."""
  im = crop_square(to_rgb(im), crop_size=crop_size, crop_box=crop_box)
  return resize_square(im, resolution, allow_upsample=allow_upsample)


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W, 3] -> PNG bytes (lossless)."""
  buf = io.BytesIO()
  Image.fromarray(image, mode='RGB').save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
  """PNG bytes written by `encode_png` -> uint8 [H, W, 3]."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert('RGB') if im.mode != 'RGB' else im)


def ordered_map(fn: Callable, items: Iterable, *, num_workers: int,
                window: int | None = None) -> Iterator:
  """`map(fn, items)` run on threads, in order, with a bounded look-ahead.

  Pillow releases the GIL while decoding and resizing, so threads give a real
  speed-up; at most `window` items are in flight (memory stays bounded for
  70k-image sources, unlike `Executor.map` which submits everything).
  """
  if num_workers <= 1:
    yield from map(fn, items)
    return
  window = window or 4 * num_workers
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
