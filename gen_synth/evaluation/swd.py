"""Multi-scale sliced Wasserstein distance (SWD), the ProGAN protocol.

Weight-free image-distribution distance of Karras et al., "Progressive Growing
of GANs" (ICLR 2018, Sec. 5 and App. D). The protocol, step by step:

1. Images [B, H, W, 3] as float32 in 0..255 (grayscale is repeated to 3
   channels). A Laplacian pyramid is built with the 5x5 binomial filter
   ([1, 4, 6, 4, 1] / 16, outer product), mirror boundary (`d c b | a b c d`):
   `down(x) = blur(x)[::2, ::2]`, `up(x) = 4 * blur(zero-interleave(x))`, level
   l = g_l - up(g_{l+1}), the coarsest level keeps the Gaussian image. Levels
   are taken from the full resolution down to 16x16 (64x64 -> 64, 32, 16).
2. From every image and level, 128 7x7x3 patches ("descriptors") at uniformly
   random positions whose 7x7 window lies inside the level (centres in
   [3, size - 4]); each set of images draws its own positions.
3. Per set and level, each colour channel of the descriptors is normalised to
   zero mean and unit standard deviation over all descriptors and the 7x7
   window; descriptors are flattened to 147 dimensions. (Being per set, this
   normalisation makes SWD blind to a global per-channel affine colour change;
   it compares local structure.)
4. The sliced Wasserstein-1 distance between the two descriptor sets (equal
   counts: both sets use the same number of images) is the mean over random
   unit directions of the mean absolute difference of the sorted projections.
   ProGAN uses 4 repeats x 128 directions (512 directions in all); the same
   directions are used for both sets.
5. Each level's distance is multiplied by 1e3; the result is the per-level
   values and their average ("SWDx1e3_avg").

Randomness comes only from the `seed`/key argument: patch positions of the two
sets and the directions each come from their own fold of it.
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def _blur_axis(x: jax.Array, axis: int, gain: float) -> jax.Array:
  """5-tap binomial filter along `axis` with mirror (reflect) boundary."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (2, 2)
  xp = jnp.pad(x, pad, mode="reflect")
  n = x.shape[axis]
  out = 0.0
  for k, w in enumerate(_BINOMIAL):
    out = out + (gain * float(w)) * jax.lax.slice_in_dim(xp, k, k + n, axis=axis)
  return out


def _blur(x: jax.Array, gain: float = 1.0) -> jax.Array:
  """[B, H, W, C] -> [B, H, W, C], separable 5x5 binomial blur (x gain)."""
  return _blur_axis(_blur_axis(x, 1, gain), 2, 1.0)


def pyr_down(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C] (cv2.pyrDown-like)."""
  return _blur(x)[:, ::2, ::2]


def pyr_up(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C] (cv2.pyrUp-like)."""
  b, h, w, c = x.shape
  up = jnp.zeros((b, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2].set(x)
  return _blur(up, gain=4.0)


def laplacian_pyramid(x: jax.Array, num_levels: int) -> list[jax.Array]:
  """[B, H, W, C] -> num_levels arrays [B, H/2^l, W/2^l, C], fine to coarse."""
  pyramid = [x.astype(jnp.float32)]
  for _ in range(1, num_levels):
    pyramid.append(pyr_down(pyramid[-1]))
    pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
  return pyramid


def pyramid_resolutions(size: int, min_resolution: int = 16) -> list[int]:
  """Levels used for an image of `size` px: size, size/2, ... >= 16."""
  res = []
  while size >= min_resolution:
    res.append(size)
    size //= 2
  if not res:
    raise ValueError(f"SWD needs images of at least {min_resolution} px.")
  return res


def _extract_patches(level: jax.Array, key: jax.Array, nhoods_per_image: int,
                     nhood_size: int) -> jax.Array:
  """[B, H, W, C] -> [B * n, nhood, nhood, C] patches at random positions."""
  b, h, w, _ = level.shape
  r = nhood_size // 2
  ky, kx = jax.random.split(key)
  ys = jax.random.randint(ky, (b, nhoods_per_image), r, h - r)
  xs = jax.random.randint(kx, (b, nhoods_per_image), r, w - r)
  offs = jnp.arange(-r, r + 1)
  bi = jnp.arange(b)[:, None, None, None]
  yi = (ys[:, :, None, None] + offs[None, None, :, None])
  xi = (xs[:, :, None, None] + offs[None, None, None, :])
  patches = level[bi, yi, xi]  # [B, n, nhood, nhood, C]
  return patches.reshape((b * nhoods_per_image, nhood_size, nhood_size, -1))


@functools.partial(jax.jit, static_argnames=("num_levels", "nhoods_per_image",
                                             "nhood_size"))
def image_descriptors(images: jax.Array, key: jax.Array, *, num_levels: int,
                      nhoods_per_image: int = 128, nhood_size: int = 7
                      ) -> tuple[jax.Array, ...]:
  """Raw descriptors of a batch, one array per pyramid level.

  Args:
    images: [B, H, W, C] (uint8 or float in 0..255; C = 1 or 3).
    key: PRNG key for the patch positions of this batch.
    num_levels: pyramid levels (see `pyramid_resolutions`).
    nhoods_per_image: patches per image and level (ProGAN: 128).
    nhood_size: patch side (ProGAN: 7).

  Returns:
    num_levels arrays [B * nhoods_per_image, nhood, nhood, 3] float32.
  """
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  pyramid = laplacian_pyramid(x, num_levels)
  keys = jax.random.split(key, num_levels)
  return tuple(_extract_patches(level, k, nhoods_per_image, nhood_size)
               for level, k in zip(pyramid, keys))


def finalize_descriptors(desc) -> np.ndarray:
  """[N, h, w, C] -> [N, h*w*C] float32, per-channel zero mean / unit std."""
  desc = np.asarray(desc, np.float32)
  flat = desc.reshape(-1, desc.shape[-1])  # [N * h * w, C]
  mean = flat.mean(axis=0, dtype=np.float64)
  std = np.sqrt(np.maximum(
      np.mean(np.square(flat, dtype=np.float64), axis=0) - mean**2, 0.0))
  desc = (desc - mean.astype(np.float32)) / np.maximum(std, 1e-8).astype(
      np.float32)
  return desc.reshape(desc.shape[0], -1)


def projection_directions(key: jax.Array, dim: int, num: int) -> np.ndarray:
  """[num, dim] random unit vectors (float32 numpy) from an explicit key."""
  dirs = np.asarray(jax.random.normal(key, (num, dim), jnp.float32))
  return dirs / np.sqrt(np.sum(np.square(dirs), axis=1, keepdims=True))


def sliced_wasserstein(a, b, key: jax.Array, *, dir_repeats: int = 4,
                       dirs_per_repeat: int = 128) -> float:
  """Sliced Wasserstein-1 distance of two equal-size point sets [N, D].

  Mean over `dir_repeats * dirs_per_repeat` random unit directions of the mean
  absolute difference between the sorted projections. The projection/sort runs
  in numpy: XLA's CPU sort is ~50x slower than numpy's SIMD sort here.
  """
  a = np.asarray(a, np.float32)
  b = np.asarray(b, np.float32)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"need two [N, D] sets of one shape: {a.shape}, {b.shape}")
  results = []
  for k in jax.random.split(key, dir_repeats):
    dirs = projection_directions(k, a.shape[1], dirs_per_repeat)
    pa = dirs @ a.T  # [dirs, N], rows contiguous for a fast sort
    pb = dirs @ b.T
    pa.sort(axis=1)
    pb.sort(axis=1)
    results.append(np.mean(np.abs(pa - pb), dtype=np.float64))
  return float(np.mean(results))


def collect_descriptors(batches: Iterable[np.ndarray], key: jax.Array, *,
                        num_images: int, nhoods_per_image: int = 128,
                        nhood_size: int = 7, min_resolution: int = 16
                        ) -> dict[int, np.ndarray]:
  """Raw descriptors of the first `num_images` images of a batch stream.

  Args:
    batches: iterable of [b, H, W, C] uint8 (or 0..255 float) batches.
    key: PRNG key; batch i uses fold_in(key, i).
    num_images: number of images to use (must be available).

  Returns:
    {level resolution: [num_images * nhoods_per_image, nhood, nhood, 3]}.
  """
  per_level: list[list[np.ndarray]] = []
  seen = 0
  resolutions = []
  for i, batch in enumerate(batches):
    if seen >= num_images:
      break
    batch = np.asarray(batch)[:num_images - seen]
    n = batch.shape[0]
    if i == 0:
      fixed = n  # later (smaller) batches are padded to this size
    pad = max(fixed - n, 0)
    if pad:
      batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
    if not resolutions:
      if batch.shape[1] != batch.shape[2]:
        raise ValueError(f"SWD expects square images, got {batch.shape}")
      resolutions = pyramid_resolutions(batch.shape[1], min_resolution)
      per_level = [[] for _ in resolutions]
    desc = image_descriptors(batch, jax.random.fold_in(key, i),
                             num_levels=len(resolutions),
                             nhoods_per_image=nhoods_per_image,
                             nhood_size=nhood_size)
    for lst, d in zip(per_level, desc):
      lst.append(np.asarray(d)[:n * nhoods_per_image])
    seen += n
  if seen < num_images:
    raise ValueError(f"SWD asked for {num_images} images, got only {seen}.")
  return {res: np.concatenate(lst) for res, lst in zip(resolutions, per_level)}


def _as_batches(images, batch_size):
  if isinstance(images, np.ndarray) or isinstance(images, jax.Array):
    for start in range(0, images.shape[0], batch_size):
      yield images[start:start + batch_size]
  else:
    yield from images


def swd_from_descriptors(desc_a: Sequence[np.ndarray],
                         desc_b: Sequence[np.ndarray], key: jax.Array, *,
                         dir_repeats: int = 4, dirs_per_repeat: int = 128
                         ) -> list[float]:
  """Per-level SWD x 1e3 from raw descriptors (same counts per level)."""
  out = []
  for level, (da, db) in enumerate(zip(desc_a, desc_b)):
    d = sliced_wasserstein(finalize_descriptors(da), finalize_descriptors(db),
                           jax.random.fold_in(key, level),
                           dir_repeats=dir_repeats,
                           dirs_per_repeat=dirs_per_repeat)
    out.append(d * 1e3)
  return out


def sliced_wasserstein_distance(
    images_a, images_b, *, seed: int, num_images: int | None = None,
    nhoods_per_image: int = 128, nhood_size: int = 7, dir_repeats: int = 4,
    dirs_per_repeat: int = 128, min_resolution: int = 16, batch_size: int = 64
) -> dict[str, float]:
  """Multi-scale SWD (x1e3) between two image sets (see module docstring).

  Args:
    images_a: [N, H, W, C] uint8 array or an iterable of such batches.
    images_b: same for the other set (same H, W).
    seed: integer seed of patch positions and projection directions.
    num_images: images used from each set (default: the smaller size of the
      array inputs; both sets must hold at least this many).
    nhoods_per_image, nhood_size, dir_repeats, dirs_per_repeat,
    min_resolution: protocol constants (ProGAN defaults).
    batch_size: batch size for array inputs.

  Returns:
    {'swd_<res>': per-level SWD x 1e3 for each pyramid resolution,
     'swd': their average}.
  """
  if num_images is None:
    sizes = [x.shape[0] for x in (images_a, images_b)
             if isinstance(x, (np.ndarray, jax.Array))]
    if not sizes:
      raise ValueError("num_images is required when both inputs are iterators")
    num_images = min(sizes)
  key = jax.random.key(seed)
  kw = dict(num_images=num_images, nhoods_per_image=nhoods_per_image,
            nhood_size=nhood_size, min_resolution=min_resolution)
  da = collect_descriptors(_as_batches(images_a, batch_size),
                           jax.random.fold_in(key, 0), **kw)
  db = collect_descriptors(_as_batches(images_b, batch_size),
                           jax.random.fold_in(key, 1), **kw)
  if list(da) != list(db):
    raise ValueError("SWD needs two image sets of the same resolution: "
                     f"levels {list(da)} vs {list(db)}")
  dists = swd_from_descriptors(list(da.values()), list(db.values()),
                               jax.random.fold_in(key, 2),
                               dir_repeats=dir_repeats,
                               dirs_per_repeat=dirs_per_repeat)
  out = {f"swd_{res}": d for res, d in zip(da, dists)}
  out["swd"] = float(np.mean(dists))
  return out
