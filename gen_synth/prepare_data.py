r"""Prepares a dataset from local files: crop, LANCZOS resize, PNG, tfds.

Usage:

  python -m gen_synth.prepare_data --dataset=ffhq \
      --source=~/downloads/ffhq/images1024x1024 --resolution=256 \
      --data_dir=~/tensorflow_datasets

  python -m gen_synth.prepare_data --dataset=image_folder \
      --source=celeba_align_6000.zip --crop_box=15,35,163,183 --resolution=64

  python -m gen_synth.prepare_data --dataset=demo_photos --resolution=64

Datasets: ffhq, lsun_church, metfaces, flickr_scenery, image_folder,
demo_photos (see docs/data.md). Shows a progress bar per split and ends with
a summary: images written per split, files skipped and why (a file that
cannot be read safely -- dangling symlink, permission denied, FIFO/device/
socket, vanished while reading -- is one skip, never the end of the build;
see gen_synth.datasets.image_io). Re-running over a complete build changes
nothing; an interrupted build leaves only a temporary `incomplete.*` folder
behind, and the next run builds from scratch. User errors (unknown dataset,
missing source, no usable image, bad flag) end in one `error:` line and exit
status 2 (gen_synth.cli).
"""

from __future__ import annotations

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
import tensorflow_datasets as tfds

from gen_synth import cli
from gen_synth import datasets

_DATASET = flags.DEFINE_string(
    'dataset', None, f'One of {", ".join(sorted(datasets.DATASETS))}.')
_SOURCE = flags.DEFINE_string(
    'source', None, 'Folder or .zip of the downloaded images (not needed for '
    'demo_photos).')
_RESOLUTION = flags.DEFINE_integer('resolution', 256, 'Output side R.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tfds data dir (default $TFDS_DATA_DIR or '
    '~/tensorflow_datasets).')
_CROP_SIZE = flags.DEFINE_integer(
    'crop_size', None, 'Centre crop of this size before resizing.')
_CROP_BOX = flags.DEFINE_list(
    'crop_box', None, 'left,top,right,bottom square crop before resizing.')
_ALLOW_UPSAMPLE = flags.DEFINE_bool(
    'allow_upsample', False, 'Upsample images smaller than --resolution '
    'instead of skipping them.')
_NUM_CROPS = flags.DEFINE_integer(
    'num_crops', datasets.DEMO_NUM_CROPS, 'demo_photos: number of crops.')
_DEMO_CROP_SIZE = flags.DEFINE_integer(
    'demo_crop_size', datasets.DEMO_CROP_SIZE, 'demo_photos: crop side.')
_DEMO_SEED = flags.DEFINE_integer(
    'demo_seed', datasets.DEMO_SEED, 'demo_photos: seed of crop positions.')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', None, 'Decoding threads (default: all cores).')


def _parse_box(values) -> tuple[int, ...] | None:
  if values is None:
    return None
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ValueError(f'--crop_box={",".join(values)} must be four integers '
                     'left,top,right,bottom.') from None


def prepare_dataset(name: str, *, source: str | None, resolution: int,
                    data_dir: str | None = None, crop_size: int | None = None,
                    crop_box=None, allow_upsample: bool = False,
                    num_crops: int = datasets.DEMO_NUM_CROPS,
                    demo_crop_size: int = datasets.DEMO_CROP_SIZE,
                    demo_seed: int = datasets.DEMO_SEED,
                    num_workers: int | None = None,
                    progress: bool = True) -> dict:
  """Builds one dataset; returns a summary dict (see `format_summary`).

  Raises:
    ValueError: one-line, user-facing problems (unknown dataset, missing or
      empty source, no usable image, bad crop).
  """
  datasets.builder_class(name)
  if name != 'demo_photos' and not source:
    raise ValueError(f'--dataset={name} needs --source=PATH: the folder or '
                     'zip of the downloaded images (see docs/data.md).')
  if source and not os.path.exists(os.path.expanduser(source)):
    raise ValueError(f'--source={source} does not exist: pass the folder (or '
                     '.zip) that holds the downloaded images.')
  source = os.path.abspath(os.path.expanduser(source)) if source else None
  config = datasets.make_config(
      name, resolution=resolution, crop_size=crop_size, crop_box=crop_box,
      allow_upsample=allow_upsample, source=source, num_crops=num_crops,
      demo_crop_size=demo_crop_size, demo_seed=demo_seed)
  builder = datasets.make_builder(name, config, data_dir=data_dir,
                                  source=source, num_workers=num_workers,
                                  progress=progress)
  built = datasets.prepare(builder)
  if not built:  # Read the stored report of the existing build.
    builder = datasets.make_builder(name, config, data_dir=data_dir)
  report = builder.report or {}
  return {
      'dataset': name,
      'tfds_name': f'{builder.name}/{config.name}',
      'path': os.fspath(builder.data_path),
      'built': built,
      'written': {s: int(builder.info.splits[s].num_examples)
                  for s in builder.info.splits},
      'skipped': report.get('skipped', {}),
      'skipped_examples': report.get('skipped_examples', {}),
  }


def format_summary(summary: dict) -> str:
  """Human-readable lines for a `prepare_dataset` summary."""
  head = ('Prepared' if summary['built'] else
          'Already prepared (nothing changed; delete the folder to rebuild)')
  lines = [f'{head}: {summary["tfds_name"]} at {summary["path"]}']
  written = ', '.join(f'{s} {n}' for s, n in sorted(summary['written'].items()))
  lines.append(f'  images written: {written} '
               f'(total {sum(summary["written"].values())})')
  skipped = summary['skipped']
  lines.append(f'  files skipped: {sum(skipped.values())}')
  for reason, count in sorted(skipped.items()):
    examples = ', '.join(summary['skipped_examples'].get(reason, []))
    lines.append(f'    {reason}: {count} (e.g. {examples})')
  return '\n'.join(lines)


def main(argv):
  cli.no_arguments(argv)
  logging.set_verbosity(logging.ERROR)  # tfds' "custom config" warnings.
  tfds.disable_progress_bar()  # Ours (per split) is enough.
  if not _DATASET.value:
    raise cli.UserError('--dataset is required: one of '
                        f'{", ".join(sorted(datasets.DATASETS))}.')
  # prepare_dataset raises ValueError only for problems the user can fix.
  with cli.user_errors(ValueError):
    summary = prepare_dataset(
        _DATASET.value, source=_SOURCE.value, resolution=_RESOLUTION.value,
        data_dir=_DATA_DIR.value, crop_size=_CROP_SIZE.value,
        crop_box=_parse_box(_CROP_BOX.value),
        allow_upsample=_ALLOW_UPSAMPLE.value, num_crops=_NUM_CROPS.value,
        demo_crop_size=_DEMO_CROP_SIZE.value, demo_seed=_DEMO_SEED.value,
        num_workers=_NUM_WORKERS.value)
  print(format_summary(summary))


if __name__ == '__main__':
  cli.run(main)
