"""Pixel coordinates of rows and columns, always computed from integer indices.

Two conventions for an image of n pixels along an axis:
- 'linspace': i / (n - 1), i.e. `linspace(lo, hi, n)` inclusive of both ends
  (the official CREPS `gen_images.py`; PixelFolder/CIPS use lo=-1, hi=1).
- 'center': (i + 0.5) / n, the pixel-centre convention; a 2x render then
  samples the centres of the 2x2 sub-pixels of the 1x render.

A crop, a shift or a tile passes the integer indices of its pixels in the
full image, so its coordinates are bit-identical to the full image's.
"""

import jax.numpy as jnp
import numpy as np

CONVENTIONS = ("linspace", "center")


def pixel_coords(indices, n: int, convention: str = "linspace",
                 lo: float = 0.0, hi: float = 1.0):
  """Coordinates [len(indices)] float32 of integer pixel `indices` of an n-pixel axis."""
  idx = jnp.asarray(indices)
  if convention == "linspace":
    t = idx.astype(jnp.float32) / np.float32(max(n - 1, 1))
  elif convention == "center":
    t = (idx.astype(jnp.float32) + np.float32(0.5)) / np.float32(n)
  else:
    raise ValueError(f"unknown coordinate convention {convention!r}; "
                     f"use one of {CONVENTIONS}")
  return (lo + (hi - lo) * t).astype(jnp.float32)


def axis_coords(n: int, convention: str = "linspace", lo: float = 0.0,
                hi: float = 1.0, start: int = 0, size=None, full=None):
  """Coordinates of pixels start..start+size of an axis of `full` (default n) pixels."""
  size = n if size is None else size
  full = n if full is None else full
  return pixel_coords(np.arange(start, start + size), full, convention, lo, hi)
