"""tfds builders that turn local image folders / zips into PNG datasets.

One generic builder, `ImageFolderBuilder`, does the work; the papers'
datasets are tiny subclasses that only differ in name and instructions. Each
builder is configured by an `ImageConfig` (resolution and crop), so builds at
different resolutions coexist in one data_dir:

    <data_dir>/gs_ffhq/r256/1.0.0/...
    <data_dir>/gs_image_folder/celeba_align_6000_r64_box15-35-163-183/1.0.0/...

Nothing is downloaded: the source is a local folder or zip passed as
`source=` (or tfds' `--manual_dir`). Stored examples are
`{'image': uint8 [R, R, 3] PNG, 'file_name': str}` in file-name order
(`disable_shuffling`), so example index i is the i-th usable file sorted by
name. The build report (images written per split, skipped files and why) is
stored in the dataset's `metadata.json` (`builder.info.metadata['report']`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Sequence

import tensorflow_datasets as tfds
import tqdm

from gen_synth.datasets import image_io

VERSION = tfds.core.Version('1.0.0')
_MAX_EXAMPLES_PER_REASON = 5


@dataclasses.dataclass(eq=False)
class ImageConfig(tfds.core.BuilderConfig):
  """Preprocessing of one build; its `name` is derived by `config_name`.

  Attributes:
    resolution: output images are [resolution, resolution, 3].
    crop_size: centre crop of this size before resizing (None: see crop_box).
    crop_box: (left, top, right, bottom) square crop; None with crop_size
      None means a centre crop to the largest square.
    allow_upsample: keep (upsample) crops smaller than `resolution` instead of
      skipping them.
    num_crops, demo_crop_size, demo_seed: only for `demo_photos`.
  """
  resolution: int = 256
  crop_size: int | None = None
  crop_box: tuple[int, int, int, int] | None = None
  allow_upsample: bool = False
  num_crops: int = 0
  demo_crop_size: int = 0
  demo_seed: int = 0


def source_tag(source: str | os.PathLike) -> str:
  """A config-name-safe tag from a source path: '/x/celeba.zip' -> 'celeba'."""
  stem = os.path.splitext(os.path.basename(os.path.normpath(str(source))))[0]
  tag = re.sub(r'[^a-z0-9]+', '_', stem.lower()).strip('_')
  return tag or 'images'


def config_name(*, resolution: int, crop_size: int | None = None,
                crop_box: Sequence[int] | None = None,
                allow_upsample: bool = False, prefix: str = '') -> str:
  """e.g. 'r256', 'r256_c1024', 'celeba_r64_box15-35-163-183'."""
  parts = [prefix] if prefix else []
  parts.append(f'r{resolution}')
  if crop_box is not None:
    parts.append('box' + '-'.join(str(int(v)) for v in crop_box))
  elif crop_size is not None:
    parts.append(f'c{crop_size}')
  if allow_upsample:
    parts.append('up')
  return '_'.join(parts)


def validate_crop(crop_size: int | None, crop_box: Sequence[int] | None):
  """Raises a one-line ValueError for an unusable crop specification."""
  if crop_size is not None and crop_box is not None:
    raise ValueError('give either --crop_size or --crop_box, not both.')
  if crop_size is not None and crop_size <= 0:
    raise ValueError(f'--crop_size={crop_size} must be positive.')
  if crop_box is not None:
    if len(crop_box) != 4:
      raise ValueError(f'--crop_box={crop_box} must be left,top,right,bottom.')
    l, t, r, b = crop_box
    if r <= l or b <= t or (r - l) != (b - t):
      raise ValueError(f'--crop_box={tuple(crop_box)} must be a non-empty '
                       f'square (right-left == bottom-top).')


class ImageFolderBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Builds a PNG dataset from a local folder tree or zip of images."""

  VERSION = VERSION
  RELEASE_NOTES = {'1.0.0': 'First version.'}
  BUILDER_CONFIG_CLS = ImageConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Pass the folder (or .zip) of images as `source` / `--source`.
  """
  HOMEPAGE = ''
  DESCRIPTION = 'Images from a local folder tree or zip.'
  # Local files only, so no url-checksums file. (tfds' own look-up of it needs
  # the optional `importlib_resources` package for editable installs.)
  code_path = None

  def __init__(self, *, config: ImageConfig, source=None,
               num_workers: int | None = None, progress: bool = False,
               **kwargs):
    """See `tfds.core.DatasetBuilder`; extra arguments below.

    Args:
      config: the `ImageConfig` of this build.
      source: local folder or .zip to build from (default: tfds' manual_dir).
      num_workers: decoding threads (default: all cores).
      progress: show a tqdm bar per split while building.
      **kwargs: for `tfds.core.DatasetBuilder` (data_dir, ...).
    """
    self._source = source
    self._num_workers = num_workers or os.cpu_count() or 1
    self._progress = progress
    self._report = None
    # array_record: random access by example index (`as_data_source`).
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(r, r, 3),
                                         encoding_format='png'),
            'file_name': tfds.features.Text(),
        }),
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(),
        # Example i is the i-th usable file in name order (see module doc).
        disable_shuffling=True,
    )

  # --- Building --------------------------------------------------------------

  def _source_path(self, dl_manager) -> str:
    return os.fspath(self._source if self._source is not None
                     else dl_manager.manual_dir)

  def _list_members(self, dl_manager) -> image_io.SourceListing:
    return image_io.list_source(self._source_path(dl_manager))

  def _split_generators(self, dl_manager):
    listing = self._list_members(dl_manager)
    self._report = {
        'source': str(self._source_path(dl_manager)),
        'written': {},
        'skipped': collections.Counter(),
        'skipped_examples': collections.defaultdict(list),
    }
    for name, reason in listing.skipped:
      self._record_skip(name, reason)
    return {split: self._generate_examples(split, members)
            for split, members in listing.splits.items()}

  def _record_skip(self, name: str, reason: str):
    self._report['skipped'][reason] += 1
    examples = self._report['skipped_examples'][reason]
    if len(examples) < _MAX_EXAMPLES_PER_REASON:
      examples.append(name)

  def _process(self, member: image_io.Member):
    """-> (name, png bytes | None, skip reason | None); runs on a thread."""
    c = self.builder_config
    try:
      im = image_io.decode_rgb(member.read_bytes())
      image = image_io.preprocess(
          im, resolution=c.resolution, crop_size=c.crop_size,
          crop_box=c.crop_box, allow_upsample=c.allow_upsample)
    except image_io.SkipImage as e:
      return member.name, None, e.reason
    return member.name, image_io.encode_png(image), None

  def _generate_examples(self, split: str, members):
    written = 0
    results = image_io.ordered_map(self._process, members,
                                   num_workers=self._num_workers)
    if self._progress:
      results = tqdm.tqdm(results, total=len(members), desc=split,
                          unit='img', dynamic_ncols=True)
    for name, png, reason in results:
      if reason is not None:
        self._record_skip(name, reason)
        continue
      written += 1
      yield name, {'image': png, 'file_name': name}
    if not written:
      raise ValueError(
          f'no usable images in split {split!r} of {self._report["source"]} '
          f'(skipped so far: {dict(self._report["skipped"])}); fix or remove '
          'those files.')
    self._report['written'][split] = written
    self.info.metadata['report'] = build_report_json(self._report)

  @property
  def report(self) -> dict | None:
    """The build report: from this build, or read back from metadata.json."""
    if self._report is not None:
      return build_report_json(self._report)
    metadata = self.info.metadata
    if metadata and 'report' in metadata:
      return dict(metadata['report'])
    return None


def build_report_json(report: dict) -> dict:
  """A JSON-able copy of a build report."""
  return {
      'source': report['source'],
      'written': dict(report['written']),
      'skipped': dict(report['skipped']),
      'skipped_examples': {k: list(v)
                           for k, v in report['skipped_examples'].items()},
  }


# --- The papers' datasets: same builder, own names and instructions. ---------


class GsImageFolder(ImageFolderBuilder):
  """Any folder tree or zip of images (`--dataset=image_folder`)."""


class GsFfhq(ImageFolderBuilder):
  """FFHQ (Karras et al., 2019), 70,000 aligned faces at 1024x1024."""
  HOMEPAGE = 'https://github.com/NVlabs/ffhq-dataset'
  DESCRIPTION = 'Flickr-Faces-HQ, from the official images1024x1024 PNGs.'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download `images1024x1024` (folder, or the zip) with the official
  download_ffhq.py and pass it as --source.
  """


class GsLsunChurch(ImageFolderBuilder):
  """LSUN church_outdoor train (Yu et al., 2015), exported to image files."""
  HOMEPAGE = 'https://github.com/fyu/lsun'
  DESCRIPTION = 'LSUN church_outdoor, centre-cropped squares.'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download church_outdoor_train_lmdb.zip, export it to JPEG files with
  `python3 data.py export church_outdoor_train_lmdb --out_dir church --flat`
  (github.com/fyu/lsun) and pass that folder as --source.
  """


class GsMetfaces(ImageFolderBuilder):
  """MetFaces (Karras et al., 2020), 1,336 faces from art at 1024x1024."""
  HOMEPAGE = 'https://github.com/NVlabs/metfaces-dataset'
  DESCRIPTION = 'MetFaces, from the official `images` folder.'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the MetFaces `images` folder (1024x1024 PNGs) and pass it as
  --source.
  """


class GsFlickrScenery(ImageFolderBuilder):
  """Flickr-Scenery (Cheng et al., InOut 2022 / used by CREPS)."""
  HOMEPAGE = 'https://github.com/yccyenchicheng/InOut'
  DESCRIPTION = 'Flickr-Scenery landscapes, centre-cropped squares.'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the Flickr-Scenery images folder and pass it as --source.
  """
