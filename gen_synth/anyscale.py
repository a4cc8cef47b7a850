"""Any-scale generation: huge images in bounded memory, coordinate transforms, interpolation.

Everything here works on pixel-independent generators (`model.pixel_independent`):
an output pixel is a function of its (row, column) coordinates only, so an image
can be computed tile by tile, and any map from output pixels to coordinates is
a valid rendering. Other models are refused with `sampling.cannot_tile_reason`.

Coordinates are always derived from pixel *indices* (gen_synth.models.coords):
a transform maps every output pixel (i, j) to a source index (si, sj) of the
plain image, in float64 on the host; integer source indices give coordinates
bit-identical to the plain image's. Conventions of this module:

  translate (dy, dx)  moves the content dy pixels down and dx pixels right:
                      out[i, j] = plain[i - dy, j - dx]  (si = i - dy).
  zoom s              magnifies by s about the image centre c = ((H-1)/2, (W-1)/2):
                      si = c + (i - c) / s  (s > 1 zooms in, the paper's "divide
                      the coordinates by s").
  rotate deg          rotates the content counter-clockwise as displayed (row
                      index pointing down) about the same centre, so that
                      rotate=90 equals `np.rot90(plain)` exactly for a square
                      image in both coordinate conventions (cos/sin of multiples
                      of 90 degrees are snapped to exact 0/+-1).
  elastic             a smooth displacement field (a sum of random plane waves,
                      drawn from an explicit PRNG key) added to the source index,
                      defined everywhere, so it can be evaluated tile by tile.

Translation and zoom are separable (row coordinate depends on i only): they are
rendered through the bi-lines like the plain image. Rotation and distortion are
per-pixel maps: CREPS evaluates its row lines at every pixel's row coordinate and
its column lines at every pixel's column coordinate and composes per pixel
(`CREPS.compose_pixels`), in one pass - the same numbers as the paper's row-by-row
method (one generator run per output row, keeping the diagonal), without the
W-fold redundant composition.

Huge images (`stream_render`) are computed one row of T x T tiles at a time and
written as they complete (.npy, .tif, or a row-streamed .png), so memory does not
grow with the image's area: the row lines of one tile-row, the column lines of one
tile-column (or, when they fit in `column_cache_bytes`, of all columns: 6 KiB per
column at res=256), one tile of per-pixel activations and one tile-row of output
bytes. All jitted calls have static shapes (edge tiles are padded), so nothing
recompiles per tile.
"""

import math
import os
import struct
import zlib
from typing import Callable, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_synth import sampling
from gen_synth import xla_cpu

IndexMap = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]

# --- jitted pieces; shapes are static per (tile, chunk), so each compiles once ---


@xla_cpu.jit(static_argnames=("model", "axis"), compute_dtype_of="model")
def _line_chunk(model, variables, ws, coords, axis):
  """coords [T] -> lines [L, B, T, rank, 32] of the rows (axis 0) or columns (axis 1)."""
  empty = coords[:0]
  args = (coords, empty) if axis == 0 else (empty, coords)
  return model.apply(variables, ws, *args, method="line_features")[axis]


@xla_cpu.jit(static_argnames=("model",), compute_dtype_of="model")
def _compose(model, variables, ws, row_feats, col_feats):
  """Lines [L, B, T, rank, 32] x2 -> [B, T, T, 3]."""
  return model.apply(variables, ws, row_feats, col_feats, method="compose")


@xla_cpu.jit(static_argnames=("model",), compute_dtype_of="model")
def _synthesis(model, variables, ws, rows, cols):
  """rows [T], cols [T] -> [B, T, T, 3] (pixel-independent models without lines)."""
  return model.apply(variables, ws, rows, cols, method="synthesis")


@xla_cpu.jit(static_argnames=("model",), compute_dtype_of="model")
def _pixels(model, variables, ws, ys, xs):
  """Per-pixel coordinates ys [P], xs [P] -> rgb [B, P, 3] (CREPS, one pass)."""
  def fn(m, ws, ys, xs):
    row_feats, col_feats = m.line_features(ws, ys, xs)   # [L, B, P, rank, 32] each
    return m.compose_pixels(ws, row_feats, col_feats)
  return model.apply(variables, ws, ys, xs, method=fn)


@xla_cpu.jit(static_argnames=("model",), compute_dtype_of="model")
def _pixels_rowwise(model, variables, ws, ys, xs):
  """Fallback for pixel-independent models without lines: ys, xs [P] -> [B, P, 3].

  The paper's method: render the P x P image of row coordinates ys and column
  coordinates xs and keep its diagonal (P times the needed work).
  """
  img = model.apply(variables, ws, ys, xs, method="synthesis")   # [B, P, P, 3]
  return jnp.diagonal(img, axis1=1, axis2=2).transpose(0, 2, 1)


def _check(model):
  """Raises CannotTileError (one line) unless the model is pixel-independent."""
  reason = sampling.cannot_tile_reason(model)
  if reason:
    raise sampling.CannotTileError(reason)


def _has_lines(model) -> bool:
  """Whether the model has bi-lines (CREPS; not CREPS-NB, which shares its class)."""
  return hasattr(model, "line_features") and getattr(model, "biline", True)


def _pad_to(x, n, axis=0):
  """Pads `x` along `axis` to length n by repeating its last entry."""
  pad = n - x.shape[axis]
  if pad <= 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return np.pad(x, widths, mode="edge")


# --- coordinate transforms (host side, float64 source indices) ------------------


def axis_source_indices(n: int, shift: float = 0.0, zoom: float = 1.0,
                        start: int = 0, size: Optional[int] = None) -> np.ndarray:
  """Source indices [size] (float64) of output pixels start..start+size of an n-pixel axis.

  si = c + (i - shift - c) / zoom with c = (n - 1) / 2: an integer shift with
  zoom 1 gives exact integer indices.
  """
  size = n if size is None else size
  i = np.arange(start, start + size, dtype=np.float64)
  c = (n - 1) / 2.0
  return c + (i - shift - c) / zoom


def _snapped_cos_sin(degrees: float):
  rad = math.radians(degrees)
  cos, sin = math.cos(rad), math.sin(rad)
  snap = lambda v: float(np.round(v)) if abs(v - np.round(v)) < 1e-12 else v
  return snap(cos), snap(sin)


def pixel_index_map(height: int, width: int, translate: Sequence[float] = (0.0, 0.0),
                    zoom: float = 1.0, rotate: float = 0.0,
                    displacement: Optional[IndexMap] = None) -> IndexMap:
  """(i, j) integer index grids -> source indices (si, sj), float64, same shape.

  Output pixel p = (i, j) samples c + R(rotate) ((p - t) - c) / zoom + d(p): the
  content is rotated counter-clockwise by `rotate` degrees about the image
  centre c, magnified by `zoom`, moved by t = `translate` (dy, dx) pixels, and
  distorted by an optional `displacement(i, j) -> (di, dj)` field (pixels).
  """
  ci, cj = (height - 1) / 2.0, (width - 1) / 2.0
  cos, sin = _snapped_cos_sin(rotate)
  dy, dx = float(translate[0]), float(translate[1])

  def index_map(i, j):
    u = (np.asarray(i, np.float64) - dy - ci) / zoom
    v = (np.asarray(j, np.float64) - dx - cj) / zoom
    si = ci + (cos * u + sin * v)
    sj = cj + (cos * v - sin * u)
    if displacement is not None:
      di, dj = displacement(i, j)
      si, sj = si + di, sj + dj
    return si, sj
  return index_map


def elastic_displacement(key, amplitude: float = 8.0, wavelength: float = 64.0,
                         num_waves: int = 8) -> IndexMap:
  """A smooth random displacement field (i, j) -> (di, dj) in pixels, from `key`.

  Sum of `num_waves` plane waves per axis with random directions, wavelengths
  around `wavelength` pixels and phases; RMS displacement about `amplitude`
  pixels. Defined analytically everywhere, so tiles of a huge image agree.
  """
  k_dir, k_len, k_phase = jax.random.split(key, 3)
  angle = np.asarray(jax.random.uniform(k_dir, (2, num_waves), maxval=2 * np.pi), np.float64)
  length = wavelength * np.exp(np.asarray(
      jax.random.uniform(k_len, (2, num_waves), minval=-0.5, maxval=0.5), np.float64))
  phase = np.asarray(jax.random.uniform(k_phase, (2, num_waves), maxval=2 * np.pi), np.float64)
  fi, fj = np.cos(angle) / length, np.sin(angle) / length       # cycles per pixel
  scale = amplitude * np.sqrt(2.0 / num_waves)

  def displacement(i, j):
    i = np.asarray(i, np.float64)[..., None]                    # [..., 1]
    j = np.asarray(j, np.float64)[..., None]
    return tuple(scale * np.sin(2 * np.pi * (i * fi[a] + j * fj[a]) + phase[a]).sum(-1)
                 for a in range(2))
  return displacement


def separable_coords(model, height: int, width: int, translate=(0.0, 0.0), zoom: float = 1.0):
  """Row coordinates [H] and column coordinates [W] (float32 numpy) of a shifted / zoomed view."""
  si = axis_source_indices(height, translate[0], zoom)
  sj = axis_source_indices(width, translate[1], zoom)
  return (np.asarray(sampling.pixel_coords(model, si.astype(np.float32), height)),
          np.asarray(sampling.pixel_coords(model, sj.astype(np.float32), width)))


def map_coords(model, index_map: IndexMap, height: int, width: int, i, j):
  """Integer output index grids i, j -> (row coords, column coords) float32 numpy, same shape."""
  si, sj = index_map(i, j)
  return (np.asarray(sampling.pixel_coords(model, np.asarray(si, np.float32), height)),
          np.asarray(sampling.pixel_coords(model, np.asarray(sj, np.float32), width)))


def render_pixels(model, variables, ws, ys, xs, chunk: int = 4096) -> np.ndarray:
  """Per-pixel coordinate maps ys, xs [H, W] -> images [B, H, W, 3] in one pass.

  CREPS: row lines at ys, column lines at xs, composed per pixel; `chunk`
  pixels per jitted call (the last chunk padded, one compilation).
  """
  _check(model)
  model = sampling.deterministic(model)  # noise-free, deterministic renders
  ys, xs = np.asarray(ys, np.float32), np.asarray(xs, np.float32)
  shape = ys.shape
  ys, xs = ys.reshape(-1), xs.reshape(-1)
  n = ys.shape[0]
  chunk = min(chunk, n)
  fn = _pixels if _has_lines(model) and hasattr(model, "compose_pixels") else _pixels_rowwise
  out = []
  for p0 in range(0, n, chunk):
    y, x = _pad_to(ys[p0:p0 + chunk], chunk), _pad_to(xs[p0:p0 + chunk], chunk)
    out.append(np.asarray(fn(model, variables, ws, y, x))[:, :min(chunk, n - p0)])
  return np.concatenate(out, axis=1).reshape((ws.shape[0],) + shape + (3,))


def render_transformed(model, variables, ws, height: int, width: int,
                       translate=(0.0, 0.0), zoom: float = 1.0, rotate: float = 0.0,
                       displacement: Optional[IndexMap] = None,
                       tile: Optional[int] = None, chunk: int = 4096) -> np.ndarray:
  """ws [B, num_ws, w_dim] -> [B, H, W, 3]: the plain image translated / zoomed / rotated / distorted.

  Without rotation or displacement the view is separable and rendered like the
  plain image (bi-lines, optionally tiled); otherwise per pixel (`render_pixels`).
  """
  _check(model)
  model = sampling.deterministic(model)  # noise-free, deterministic renders
  if rotate % 360 == 0 and displacement is None:
    rows, cols = separable_coords(model, height, width, translate, zoom)
    return sampling.render(model, variables, ws, height, width, tile=tile,
                           rows=jnp.asarray(rows), cols=jnp.asarray(cols))
  index_map = pixel_index_map(height, width, translate, zoom, rotate, displacement)
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  ys, xs = map_coords(model, index_map, height, width, i, j)
  return render_pixels(model, variables, ws, ys, xs, chunk)


# --- tile-row iteration (bounded memory) ------------------------------------------


def iter_tile_rows(model, variables, ws, height: int, width: int, tile: int = 1024,
                   rows=None, cols=None, index_map: Optional[IndexMap] = None,
                   chunk: int = 4096, column_cache_bytes: int = 1 << 30,
                   dtype=np.float32,
                   progress: bool = False) -> Iterator[Tuple[int, np.ndarray]]:
  """Yields (i0, block [B, h, W, 3] `dtype`) for each row of T x T tiles, top to bottom.

  rows [H] / cols [W]: coordinates of a separable view (default: the plain
  image); `index_map`: a per-pixel map (i, j) -> source indices instead. CREPS
  computes the row lines of each tile-row once, the column lines per
  tile-column (kept for all columns if they fit in `column_cache_bytes`,
  recomputed per tile otherwise), and composes each tile. Each tile is
  converted to `dtype` (uint8: as `sampling.to_uint8`) as it lands in the
  tile-row buffer. Peak memory is one tile's activations (set by `tile` and
  `chunk`) plus two buffers linear in W: the tile-row (T * 3 values per column)
  and the cached column lines (capped by `column_cache_bytes`); nothing grows
  with H.
  """
  _check(model)
  model = sampling.deterministic(model)  # noise-free, deterministic renders
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  t = tile
  n_i, n_j = -(-height // t), -(-width // t)
  bar = tqdm(total=n_i * n_j, unit="tile", disable=not progress, smoothing=0.1)
  if index_map is None:
    rows = np.asarray(sampling.pixel_coords(model, np.arange(height), height)
                      if rows is None else rows, np.float32)
    cols = np.asarray(sampling.pixel_coords(model, np.arange(width), width)
                      if cols is None else cols, np.float32)
    row_chunk = lambda i0: _pad_to(rows[i0:i0 + t], t)
    col_chunk = lambda j0: _pad_to(cols[j0:j0 + t], t)
  lines = index_map is None and _has_lines(model)
  col_cache = {}

  def col_lines(j0):
    """Column lines [L, B, T, rank, 32] of tile-column j0, cached if all columns fit."""
    if j0 in col_cache:
      return col_cache[j0]
    feats = _line_chunk(model, variables, ws, col_chunk(j0), 1)
    if feats.nbytes // t * width <= column_cache_bytes:
      col_cache[j0] = feats
    return feats
  try:
    for i0 in range(0, height, t):
      h = min(t, height - i0)
      block = np.empty((ws.shape[0], h, width, 3), dtype)
      if lines:
        row_lines = _line_chunk(model, variables, ws, row_chunk(i0), 0)
      for j0 in range(0, width, t):
        w = min(t, width - j0)
        if lines:
          piece = _compose(model, variables, ws, row_lines, col_lines(j0))
        elif index_map is None:
          piece = _synthesis(model, variables, ws, row_chunk(i0), col_chunk(j0))
        else:
          i, j = np.meshgrid(np.arange(i0, i0 + t), np.arange(j0, j0 + t), indexing="ij")
          ys, xs = map_coords(model, index_map, height, width, i, j)
          piece = render_pixels(model, variables, ws, ys, xs, min(chunk, t * t))
        block[:, :, j0:j0 + w] = _quantize(np.asarray(piece)[:, :h, :w], dtype)
        bar.update(1)
      yield i0, block
  finally:
    bar.close()


# --- streaming writers ------------------------------------------------------------


def _quantize(block: np.ndarray, dtype) -> np.ndarray:
  if np.dtype(dtype) == np.uint8:
    return sampling.to_uint8(block)
  return block.astype(dtype, copy=False)


class PngStreamWriter:
  """Writes an 8-bit RGB PNG row by row (IHDR, zlib-streamed IDAT chunks, IEND).

  Rows use PNG filter 1 ("Sub": each byte minus the byte one pixel to the left,
  modulo 256), which compresses smooth images well and costs one subtraction.
  """

  def __init__(self, path: str, height: int, width: int, compress_level: int = 6):
    self.height, self.width, self.rows_written = height, width, 0
    self._file = open(path, "wb")
    self._file.write(b"\x89PNG\r\n\x1a\n")
    self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    self._zlib = zlib.compressobj(compress_level)

  def _chunk(self, kind: bytes, data: bytes):
    self._file.write(struct.pack(">I", len(data)) + kind + data)
    self._file.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

  def write_rows(self, rows: np.ndarray):
    """rows uint8 [h, W, 3], the next h rows of the image."""
    rows = np.ascontiguousarray(rows, np.uint8).reshape(rows.shape[0], -1)
    raw = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    raw[:, 0] = 1
    raw[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=raw[:, 4:])   # uint8 wraps modulo 256
    data = self._zlib.compress(raw)   # the buffer itself, no bytes copy
    if data:
      self._chunk(b"IDAT", data)
    self.rows_written += rows.shape[0]

  def close(self):
    if self.rows_written != self.height:
      raise ValueError(f"PNG has {self.height} rows, {self.rows_written} were written")
    self._chunk(b"IDAT", self._zlib.flush())
    self._chunk(b"IEND", b"")
    self._file.close()


class RawStreamWriter:
  """Writes C-ordered rows sequentially into the data region of a .npy or uncompressed .tif.

  The file (header and sparse data region) is created first, then rows are
  written through an ordinary file handle, so nothing stays mapped in memory.
  """

  def __init__(self, path: str, height: int, width: int, dtype=np.uint8):
    self.height, self.width, self.dtype = height, width, np.dtype(dtype)
    shape = (height, width, 3)
    if path.endswith(".npy"):
      mm = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=shape)
    else:
      import tifffile  # pylint: disable=g-import-not-at-top
      nbytes = height * width * 3 * self.dtype.itemsize
      mm = tifffile.memmap(path, shape=shape, dtype=self.dtype, photometric="rgb",
                           bigtiff=nbytes > 2**32 - 2**25)
    offset = mm.offset
    del mm
    self._file = open(path, "r+b")
    self._file.seek(offset)
    self.rows_written = 0

  def write_rows(self, rows: np.ndarray):
    """rows [h, W, 3] of the file's dtype, the next h rows."""
    self._file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
    self.rows_written += rows.shape[0]

  def close(self):
    if self.rows_written != self.height:
      raise ValueError(f"image has {self.height} rows, {self.rows_written} were written")
    self._file.close()


def stream_render(model, variables, ws, path: str, height: int, width: int,
                  tile: int = 1024, translate=(0.0, 0.0), zoom: float = 1.0,
                  rotate: float = 0.0, displacement: Optional[IndexMap] = None,
                  dtype=None, column_cache_bytes: int = 1 << 30,
                  progress: bool = True) -> str:
  """Renders one image ws [1, num_ws, w_dim] of any size straight into `path`.

  `path` ends in .png (8-bit, row-streamed), .npy or .tif/.tiff (dtype uint8,
  float16 or float32; default uint8, mapped as gen_images.py: x * 127.5 + 128).
  Tiles are T x T (`tile`), quantised to `dtype` one tile at a time; memory is
  one tile's activations plus one tile-row of output (see `iter_tile_rows`).
  Returns `path`.
  """
  _check(model)
  model = sampling.deterministic(model)  # noise-free, deterministic renders
  if ws.shape[0] != 1:
    raise ValueError(f"stream_render writes one image; got a batch of {ws.shape[0]}")
  ext = os.path.splitext(path)[1].lower()
  dtype = np.dtype(dtype or np.uint8)
  if ext == ".png":
    if dtype != np.uint8:
      raise ValueError("PNG output is 8-bit; use .npy or .tif for float16/float32")
    writer = PngStreamWriter(path, height, width)
  elif ext in (".npy", ".tif", ".tiff"):
    writer = RawStreamWriter(path, height, width, dtype)
  else:
    raise ValueError(f"stream output must be .png, .npy or .tif, got {path!r}")
  rows = cols = index_map = None
  if rotate % 360 == 0 and displacement is None:
    rows, cols = separable_coords(model, height, width, translate, zoom)
  else:
    index_map = pixel_index_map(height, width, translate, zoom, rotate, displacement)
  for _, block in iter_tile_rows(model, variables, ws, height, width, tile, rows, cols,
                                 index_map, column_cache_bytes=column_cache_bytes,
                                 dtype=dtype, progress=progress):
    writer.write_rows(block[0])
  writer.close()
  return path


# --- latent interpolation -----------------------------------------------------------


def slerp(a, b, t):
  """Spherical interpolation of vectors a, b [..., D] at t in [0, 1] (lerp where parallel)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
  cos = np.clip(np.sum(a * b, -1, keepdims=True) / (na * nb), -1.0, 1.0)
  omega = np.arccos(cos)
  so = np.sin(omega)
  safe = so > 1e-6
  ca = np.where(safe, np.sin((1 - t) * omega) / np.where(safe, so, 1), 1 - t)
  cb = np.where(safe, np.sin(t * omega) / np.where(safe, so, 1), t)
  return ca * a + cb * b


def interpolation_ws(model, variables, seeds: Sequence[int], steps: int, space: str = "z",
                     truncation_psi: float = 1.0, loop: bool = False):
  """ws [len(pairs) * steps, num_ws, w_dim] between consecutive seeds.

  space='z': slerp between the Gaussian latents z (then mapped);
  space='w': lerp between the mapped ws. Pair k goes from seed k to seed k+1
  (and from the last back to the first with `loop`), t = 0 .. 1 - 1/steps
  when looping (no repeated frame), 0 .. 1 inclusive otherwise.
  """
  if len(seeds) < 2:
    raise ValueError("interpolation needs at least two seeds")
  z = sampling.seed_latents(seeds, model.z_dim)
  ends = list(range(len(seeds))) + ([0] if loop else [])
  ts = np.arange(steps) / steps if loop else np.linspace(0.0, 1.0, steps)
  if space == "z":
    zs = [slerp(z[a], z[b], t) for a, b in zip(ends[:-1], ends[1:]) for t in ts]
    return sampling.map_latents(model, variables, np.stack(zs).astype(np.float32),
                                truncation_psi)
  if space == "w":
    w = np.asarray(sampling.map_latents(model, variables, z, truncation_psi))
    ws = [(1 - t) * w[a] + t * w[b] for a, b in zip(ends[:-1], ends[1:]) for t in ts]
    return jnp.asarray(np.stack(ws), jnp.float32)
  raise ValueError(f"interpolation space must be 'z' or 'w', got {space!r}")


def write_interpolation(model, variables, seeds: Sequence[int], steps: int, outdir: str,
                        height: int, width: int, space: str = "z",
                        truncation_psi: float = 1.0, batch_size: int = 8,
                        gif_ms: int = 80) -> Tuple[str, str]:
  """Writes OUTDIR/interp_grid.png (one row per seed pair, `steps` columns) and
  OUTDIR/interp.gif (a loop through all seeds). Returns the two paths."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(outdir, exist_ok=True)

  def frames(ws):
    out = []
    for s in range(0, ws.shape[0], batch_size):
      out.append(sampling.to_uint8(sampling.render(model, variables, ws[s:s + batch_size],
                                                   height, width)))
    return np.concatenate(out)

  grid = frames(interpolation_ws(model, variables, seeds, steps, space, truncation_psi))
  grid = grid.reshape(len(seeds) - 1, steps, height, width, 3)
  grid = grid.transpose(0, 2, 1, 3, 4).reshape((len(seeds) - 1) * height, steps * width, 3)
  grid_path = os.path.join(outdir, "interp_grid.png")
  Image.fromarray(grid).save(grid_path)
  video = frames(interpolation_ws(model, variables, seeds, steps, space, truncation_psi,
                                  loop=True))
  gif_path = os.path.join(outdir, "interp.gif")
  images = [Image.fromarray(f) for f in video]
  images[0].save(gif_path, save_all=True, append_images=images[1:], duration=gif_ms, loop=0)
  return grid_path, gif_path
