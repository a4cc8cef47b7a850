"""gen_synth's tfds datasets: user-facing names -> builders.

| name (config / CLI) | tfds builder | source |
| --- | --- | --- |
| ffhq | gs_ffhq | images1024x1024 folder or zip |
| lsun_church | gs_lsun_church | church_outdoor exported to image files |
| metfaces | gs_metfaces | MetFaces `images` folder |
| flickr_scenery | gs_flickr_scenery | Flickr-Scenery folder |
| image_folder | gs_image_folder | any folder tree or zip |
| demo_photos | gs_demo_photos | bundled scikit-image photos (no source) |

`make_builder` returns a builder for (name, resolution, crop); `prepare` builds
it from local files only (never the network).
"""

from __future__ import annotations

import os
from typing import Sequence

import tensorflow_datasets as tfds

from gen_synth import data_config
from gen_synth.datasets import builders
from gen_synth.datasets import demo_photos
from gen_synth.datasets import image_io

DATASETS = {
    'ffhq': builders.GsFfhq,
    'lsun_church': builders.GsLsunChurch,
    'metfaces': builders.GsMetfaces,
    'flickr_scenery': builders.GsFlickrScenery,
    'image_folder': builders.GsImageFolder,
    'demo_photos': demo_photos.GsDemoPhotos,
}

# Defaults of the demo data (those of the data config: gen_synth/data_config.py).
DEMO_NUM_CROPS = data_config.DEMO_NUM_CROPS
DEMO_CROP_SIZE = data_config.DEMO_CROP_SIZE
DEMO_SEED = data_config.DEMO_SEED


def builder_class(name: str) -> type[builders.ImageFolderBuilder]:
  """Builder class of a user-facing dataset name (one-line error if unknown)."""
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; choose one of '
                     f'{", ".join(sorted(DATASETS))}.')
  return DATASETS[name]


def make_config(name: str, *, resolution: int, crop_size: int | None = None,
                crop_box: Sequence[int] | None = None,
                allow_upsample: bool = False, source: str | None = None,
                num_crops: int = DEMO_NUM_CROPS,
                demo_crop_size: int = DEMO_CROP_SIZE,
                demo_seed: int = DEMO_SEED) -> builders.ImageConfig:
  """The `ImageConfig` of a build; its name keys the directory in data_dir."""
  builder_class(name)
  if resolution <= 0:
    raise ValueError(f'--resolution={resolution} must be positive.')
  if name == 'demo_photos':
    return demo_photos.demo_config(
        resolution=resolution, num_crops=num_crops,
        demo_crop_size=demo_crop_size, demo_seed=demo_seed)
  crop_box = tuple(int(v) for v in crop_box) if crop_box is not None else None
  builders.validate_crop(crop_size, crop_box)
  prefix = ''
  if name == 'image_folder':
    if not source:
      raise ValueError('dataset image_folder needs a source: --source=PATH '
                       '(or config.data.source), a folder or zip of images.')
    prefix = builders.source_tag(source)
  return builders.ImageConfig(
      name=builders.config_name(resolution=resolution, crop_size=crop_size,
                                crop_box=crop_box,
                                allow_upsample=allow_upsample, prefix=prefix),
      version=builders.VERSION, resolution=resolution, crop_size=crop_size,
      crop_box=crop_box, allow_upsample=allow_upsample)


def make_builder(name: str, config: builders.ImageConfig, *,
                 data_dir: str | None = None, source: str | None = None,
                 num_workers: int | None = None,
                 progress: bool = False) -> builders.ImageFolderBuilder:
  """A builder for `config` in `data_dir` (None: tfds' default data dir)."""
  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)
  return builder_class(name)(config=config, data_dir=data_dir, source=source,
                             num_workers=num_workers, progress=progress)


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether a complete build exists (tfds renames it into place at the end)."""
  return (builder.data_path / 'dataset_info.json').exists()


def prepare(builder: builders.ImageFolderBuilder) -> bool:
  """Builds `builder` if needed, from local files only.

  tfds writes into a temporary `incomplete.*` directory and renames it at the
  end, so an interrupted build leaves no partial dataset behind, and an
  existing complete build is reused untouched.

  Returns:
    True if a build ran, False if a complete build already existed.
  """
  if is_prepared(builder):
    return False
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False,
          download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return True


__all__ = ['DATASETS', 'builder_class', 'make_config', 'make_builder',
           'is_prepared', 'prepare', 'builders', 'image_io', 'demo_photos']
