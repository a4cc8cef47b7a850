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

Reading files (`read_file`, `read_zip_entry`: every byte of a source goes
through one of these two guarded readers):

* A folder is walked in name order. A directory symlink is followed once per
  real folder, keyed by `(st_dev, st_ino)`: a link back to a folder already
  read (`sub/loop -> ..`, or a second link to one folder) is skipped with
  reason `folder already read (directory link)`, so a tree never yields a file
  twice through links and link loops end. File symlinks are read as files.
* Before a file is opened it is `stat`ed: FIFOs, character/block devices,
  sockets (and anything else that is not a regular file) are skipped as
  `special file (FIFO, device or socket)` and never opened; files are opened
  with `O_NONBLOCK` as well, so nothing can block the build.
* `dangling symlink` (target missing, or a loop of links), `permission denied`,
  `vanished or changed while reading` (deleted, replaced or resized between
  the listing and the end of the read) and `unreadable` (any other OS error,
  e.g. EIO) skip the file; a folder that cannot be listed is skipped with the
  same reasons.
* Zip entries: a Unix symlink entry is **not** followed (its target could
  point outside the archive) and is skipped as `symlink in zip (not
  followed)`; FIFO/device/socket entries are skipped as special files, an
  encrypted entry as `encrypted zip entry`, an entry whose data fails its CRC
  or does not decompress as `corrupt or truncated`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import io
import os
import pathlib
import stat
import zipfile
import zlib
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
# Skip reasons of the guarded readers (files that cannot be read safely).
SPECIAL_FILE = 'special file (FIFO, device or socket)'
DANGLING_SYMLINK = 'dangling symlink'
PERMISSION_DENIED = 'permission denied'
VANISHED = 'vanished or changed while reading'
UNREADABLE = 'unreadable'
REPEATED_FOLDER = 'folder already read (directory link)'
ZIP_SYMLINK = 'symlink in zip (not followed)'
ZIP_ENCRYPTED = 'encrypted zip entry'

# O_NONBLOCK: even a FIFO that slipped past the stat check cannot block open().
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) |
               getattr(os, 'O_NOCTTY', 0) | getattr(os, 'O_CLOEXEC', 0) |
               getattr(os, 'O_BINARY', 0))
_READ_CHUNK = 1 << 20
_ZIP_UNIX = 3  # ZipInfo.create_system of archives made on Unix.


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


def _file_kind(mode: int) -> str:
  """'regular file', 'FIFO', 'character device', ... of an st_mode."""
  for test, kind in ((stat.S_ISREG, 'regular file'), (stat.S_ISDIR, 'folder'),
                     (stat.S_ISFIFO, 'FIFO'), (stat.S_ISCHR, 'character device'),
                     (stat.S_ISBLK, 'block device'), (stat.S_ISSOCK, 'socket'),
                     (stat.S_ISLNK, 'symlink')):
    if test(mode):
      return kind
  return f'file of mode {stat.S_IFMT(mode):#o}'


def _reason_of(error: OSError, path: str) -> str:
  """The skip reason of an OSError raised while stat-ing/opening/reading."""
  if isinstance(error, PermissionError):
    return PERMISSION_DENIED
  if error.errno == errno.ELOOP:
    return DANGLING_SYMLINK
  if isinstance(error, FileNotFoundError) or error.errno == errno.ESTALE:
    return DANGLING_SYMLINK if os.path.islink(path) else VANISHED
  return UNREADABLE


def _skip(error: OSError, path: str) -> SkipImage:
  return SkipImage(_reason_of(error, path), error.strerror or str(error))


def _stat_regular(path: str) -> os.stat_result:
  """stat (following links) of a regular file; SkipImage for anything else."""
  try:
    st = os.stat(path)
  except OSError as e:
    raise _skip(e, path) from e
  if not stat.S_ISREG(st.st_mode):
    raise SkipImage(SPECIAL_FILE, _file_kind(st.st_mode))
  return st


def _read_fd(fd: int) -> bytes:
  chunks = []
  while chunk := os.read(fd, _READ_CHUNK):
    chunks.append(chunk)
  return b''.join(chunks)


def read_file(path: str | os.PathLike) -> bytes:
  """All bytes of the regular file `path`, or SkipImage with the reason.

  The one reader of files on disk in data preparation: it stats before it
  opens (special files are never opened), opens with O_NONBLOCK, checks that
  the file it opened is the one it stat-ed and that it read `st_size` bytes,
  and turns every OS error into a skip reason (module doc).
  """
  path = os.fspath(path)
  st = _stat_regular(path)
  try:
    fd = os.open(path, _OPEN_FLAGS)
  except OSError as e:
    raise _skip(e, path) from e
  try:
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
      raise SkipImage(VANISHED, 'replaced between stat and open')
    data = _read_fd(fd)
  except OSError as e:
    raise _skip(e, path) from e
  finally:
    os.close(fd)
  if len(data) != opened.st_size:
    raise SkipImage(VANISHED, f'read {len(data)} of {opened.st_size} bytes')
  return data


def _zip_mode(info: zipfile.ZipInfo) -> int:
  """The Unix st_mode stored in a zip entry (0 when the archive has none)."""
  return info.external_attr >> 16 if info.create_system == _ZIP_UNIX else 0


def read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
  """The bytes of one zip entry, or SkipImage with the reason (module doc).

  ZipFile serialises reads of its shared file handle with a lock, so this may
  be called from worker threads.
  """
  mode = _zip_mode(info)
  if stat.S_ISLNK(mode):
    raise SkipImage(ZIP_SYMLINK)
  if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
    raise SkipImage(SPECIAL_FILE, _file_kind(mode))
  if info.flag_bits & 0x1:
    raise SkipImage(ZIP_ENCRYPTED)
  try:
    return zf.read(info)
  except (zipfile.BadZipFile, zlib.error, EOFError) as e:
    raise SkipImage(CORRUPT, str(e)) from e
  except (NotImplementedError, OSError) as e:  # Unknown compression, EIO.
    raise SkipImage(UNREADABLE, str(e)) from e


def _list_zip(path: pathlib.Path,
              ) -> tuple[list[str], Callable[[str], Callable[[], bytes]]]:
  """Entry names of a zip (folders left out) and a reader factory."""
  try:
    zf = zipfile.ZipFile(path)
  except PermissionError:
    raise ValueError(f'--source={path}: permission denied.') from None
  except (zipfile.BadZipFile, OSError) as e:
    raise ValueError(f'--source={path} is a file but not a readable zip '
                     f'archive ({e}): pass a folder of images or a .zip of '
                     'images.') from None
  infos = {i.filename: i for i in zf.infolist()
           if not i.is_dir() and not stat.S_ISDIR(_zip_mode(i))}
  return list(infos), lambda n: lambda: read_zip_entry(zf, infos[n])


def _is_dir(entry: os.DirEntry) -> bool:
  """Whether an entry is a folder, links followed; False when it cannot tell
  (a dangling link or a loop of links: `read_file` gives the reason)."""
  try:
    return entry.is_dir(follow_symlinks=True)
  except OSError:
    return False


def _scan_dir(path: str) -> list[tuple[str, bool]]:
  """(entry name, is a folder (links followed)) of one folder, name order."""
  with os.scandir(path) as it:
    entries = [(e.name, _is_dir(e)) for e in it]
  return sorted(entries)


def walk_folder(root: str | os.PathLike,
                ) -> tuple[list[str], list[tuple[str, str]]]:
  """('/'-separated file paths under `root`, skipped (name, reason)).

  Depth-first in name order; directory links are followed at most once per
  real folder (`(st_dev, st_ino)`), so loops end and no folder is read twice.
  Entries that are not folders (files, links, FIFOs, ...) are returned as
  names; `read_file` decides later whether they can be read.
  """
  root = os.fspath(root)
  seen, names, skipped = set(), [], []
  stack = [('', root)]
  while stack:
    rel, path = stack.pop()
    try:
      st = os.stat(path)
      key = (st.st_dev, st.st_ino)
      if key in seen:
        skipped.append((rel + '/', REPEATED_FOLDER))
        continue
      seen.add(key)
      entries = _scan_dir(path)
    except OSError as e:
      if not rel:  # The source itself: the user has to fix that.
        raise ValueError(f'--source={root} cannot be listed: '
                         f'{e.strerror or e}.') from None
      skipped.append((rel + '/', _reason_of(e, path)))
      continue
    subdirs = []
    for name, is_dir in entries:
      child = f'{rel}/{name}' if rel else name
      if is_dir:
        subdirs.append((child, os.path.join(path, name)))
      else:
        names.append(child)
    stack.extend(reversed(subdirs))
  return names, skipped


def _list_names(source: pathlib.Path,
                ) -> tuple[list[str], Callable[[str], Callable[[], bytes]],
                           list[tuple[str, str]]]:
  """File names under `source` (a folder or a .zip), a reader factory, and
  the (name, reason) of folders skipped while listing."""
  try:
    st = os.stat(source)
  except PermissionError:
    raise ValueError(f'--source={source}: permission denied.') from None
  except OSError as e:
    raise ValueError(f'--source={source} cannot be read: '
                     f'{e.strerror or e}.') from None
  if stat.S_ISREG(st.st_mode):
    names, reader = _list_zip(source)
    return names, reader, []
  if not stat.S_ISDIR(st.st_mode):
    raise ValueError(f'--source={source} is a {_file_kind(st.st_mode)}: pass a '
                     'folder of images or a .zip of images.')
  names, skipped = walk_folder(source)
  return names, lambda n: lambda: read_file(source / n), skipped


def list_source(source: str | os.PathLike) -> SourceListing:
  """Lists the image candidates of a folder tree or a zip, sorted by name.

  Images under a top-level folder named one of `SPLIT_FOLDERS` go to that
  split; all other images go to `train`. Non-image files are returned in
  `skipped` with reason `NOT_AN_IMAGE` (never opened), and so are folders the
  walk skipped (`walk_folder`). Members read through `read_file` /
  `read_zip_entry`, which raise `SkipImage` for files that cannot be read.

  Raises:
    ValueError: the source is missing, not a folder/zip, or holds no file with
      an image extension (one-line messages meant for the user).
  """
  path = pathlib.Path(source).expanduser()
  if not path.exists():
    raise ValueError(f'--source={source} does not exist: pass the folder (or '
                     '.zip) that holds the downloaded images.')
  names, reader, skipped = _list_names(path)
  splits = collections.defaultdict(list)
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
