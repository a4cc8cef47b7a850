"""The data config: its fields and defaults (the `data` field of a training config).

Apart from the input pipeline (gen_synth/data.py, which needs tfds) so that
a training config is built without TensorFlow: what only measures or checks
a model or a step (experiments/benchmarks/accelerator.py on a GPU image with
JAX alone) builds its config from here. `data.default_data_config` is this.
"""

import ml_collections
from ml_collections import config_dict

# Defaults of the demo data (`gen_synth.datasets`, `prepare_data`).
DEMO_NUM_CROPS = 2048
DEMO_CROP_SIZE = 128
DEMO_SEED = 0


def default_data_config() -> ml_collections.ConfigDict:
  """Data config (the `data` field of a training config).

  Fields:
    name: dataset: ffhq | lsun_church | metfaces | flickr_scenery |
      image_folder | demo_photos.
    data_dir: tfds data dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets.
    source: folder/zip the dataset was prepared from; needed for
      image_folder (its tag names the build), ignored by the others.
    resolution: image side R of the [B, R, R, 3] batches (selects the build).
    split: tfds split to read ('train'; image_folder also has the names of
      its top-level split folders, e.g. 'holdout').
    crop_size: centre crop used when preparing (selects the build), or None.
    crop_box: (left, top, right, bottom) crop used when preparing, or None.
    allow_upsample: whether the build kept images smaller than R (upsampled).
    xflip: random horizontal flips (probability 1/2, from seed/epoch/index).
    seed: data seed (order and flips); combined with InputPipeline(seed=).
    num_demo_crops: demo_photos: number of crops N.
    demo_crop_size: demo_photos: crop side in pixels before resizing to R.
    demo_seed: demo_photos: seed of the crop positions (selects the build).
    num_workers: decoding threads per process; None: all CPU cores.
    prefetch: batches decoded ahead of the one being consumed.
  """
  c = ml_collections.ConfigDict()
  c.name = 'demo_photos'
  c.data_dir = config_dict.placeholder(str)
  c.source = config_dict.placeholder(str)
  c.resolution = 256
  c.split = 'train'
  c.crop_size = config_dict.placeholder(int)
  c.crop_box = config_dict.placeholder(tuple)
  c.allow_upsample = False
  c.xflip = True
  c.seed = 0
  c.num_demo_crops = DEMO_NUM_CROPS
  c.demo_crop_size = DEMO_CROP_SIZE
  c.demo_seed = DEMO_SEED
  c.num_workers = config_dict.placeholder(int)
  c.prefetch = 2
  return c
