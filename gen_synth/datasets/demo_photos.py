"""`demo_photos`: random crops of the public-domain photos inside scikit-image.

Needs no download: scikit-image (a dependency) ships these colour photographs
in its wheel. Only photos whose `skimage.data` docstring states CC0 or public
domain are used:

| loader | size | licence (from its docstring) |
| --- | --- | --- |
| astronaut | 512x512 | public domain (NASA Great Images) |
| coffee | 400x600 | CC0 (photographer Rachel Michetti) |
| chelsea | 300x451 | CC0 (photographer Stefan van der Walt) |
| rocket | 427x640 | public domain (SpaceX photos) |
| hubble_deep_field | 872x1000 | public domain (NASA) |
| retina | 1411x1411 | CC0 1.0 Universal |

`num_crops` square crops of `demo_crop_size` pixels are cut at positions drawn
from `np.random.default_rng(demo_seed)` (photo i % 6 for crop i, uniform
top-left corner), then go through the same decode -> crop -> LANCZOS resize ->
PNG path as any folder dataset (upsampling allowed: the crops are a demo).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gen_synth.datasets import builders
from gen_synth.datasets import image_io

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field',
          'retina')


def load_photos() -> dict[str, np.ndarray]:
  """name -> uint8 [H, W, 3] for each photo in `PHOTOS` (no network)."""
  import skimage.data  # pylint: disable=g-import-not-at-top  (slow import)
  return {name: np.asarray(getattr(skimage.data, name)(), np.uint8)[..., :3]
          for name in PHOTOS}


def crop_positions(shapes: dict[str, tuple[int, int]], *, num_crops: int,
                   crop_size: int, seed: int) -> list[tuple[str, int, int]]:
  """Deterministic crop list: [(photo, top, left)] * num_crops."""
  rng = np.random.default_rng(seed)
  names = sorted(shapes)
  out = []
  for i in range(num_crops):
    name = names[i % len(names)]
    h, w = shapes[name]
    top = int(rng.integers(0, h - crop_size + 1))
    left = int(rng.integers(0, w - crop_size + 1))
    out.append((name, top, left))
  return out


def _png_reader(image: np.ndarray):
  def read() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format='PNG', compress_level=1)
    return buf.getvalue()
  return read


class GsDemoPhotos(builders.ImageFolderBuilder):
  """Random crops of CC0 / public-domain scikit-image photos (no download)."""
  DESCRIPTION = __doc__
  HOMEPAGE = 'https://scikit-image.org/docs/stable/api/skimage.data.html'
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Nothing to download.'

  def _source_path(self, dl_manager) -> str:
    del dl_manager
    return 'skimage.data:' + ','.join(PHOTOS)

  def _list_members(self, dl_manager) -> image_io.SourceListing:
    del dl_manager
    c = self.builder_config
    photos = load_photos()
    size = c.demo_crop_size
    too_small = [n for n, p in photos.items() if min(p.shape[:2]) < size]
    if too_small:
      raise ValueError(f'demo_crop_size={size} is larger than photos '
                       f'{too_small}; use a demo_crop_size <= 300.')
    positions = crop_positions({n: p.shape[:2] for n, p in photos.items()},
                               num_crops=c.num_crops, crop_size=size,
                               seed=c.demo_seed)
    members = []
    for i, (name, top, left) in enumerate(positions):
      crop = photos[name][top:top + size, left:left + size]
      members.append(image_io.Member(
          f'{i:06d}_{name}_y{top}_x{left}', _png_reader(crop)))
    return image_io.SourceListing({'train': members}, [])


def demo_config(*, resolution: int, num_crops: int, demo_crop_size: int,
                demo_seed: int) -> builders.ImageConfig:
  """The builder config of a demo build, e.g. name 'r64_n2048_c128_s0'."""
  return builders.ImageConfig(
      name=f'r{resolution}_n{num_crops}_c{demo_crop_size}_s{demo_seed}',
      version=builders.VERSION, resolution=resolution, allow_upsample=True,
      num_crops=num_crops, demo_crop_size=demo_crop_size,
      demo_seed=demo_seed,
      description=f'{num_crops} crops of {demo_crop_size}px -> {resolution}px.')
