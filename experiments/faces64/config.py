r"""A small CREPS at 64x64 on the CelebA faces of ../shared/data (train split).

Shows on a 2-core CPU that gen_synth learns: about an hour of training,
loss curves, sample grids and the SWD of 810 samples against the 810 holdout
faces (identities disjoint from train) every 250 steps.

  python -m gen_synth.prepare_data --dataset=image_folder \
      --source=../shared/data/celeba_align_6000.zip --crop_box=15,35,163,183 \
      --resolution=64 --data_dir=/tmp/faces64_tfds
  python -m gen_synth.main --config=experiments/faces64/config.py \
      --workdir=/tmp/faces64_run --config.data.data_dir=/tmp/faces64_tfds
  python experiments/faces64/report.py --workdir=/tmp/faces64_run

The model keeps CREPS's structure (Fourier lines, 5 blocks b4..b64, bi-line
thickness 8, per-block decoders, 2 refinement blocks) at reduced widths.
"""

import os

from gen_synth import config_utils

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")


def get_config(arg=None):
  del arg
  res = 64
  config = config_utils.base_config(res)
  m = config.model
  m.name = "creps"
  m.resolution = res
  m.z_dim = m.w_dim = 128
  m.mapping_layers = 4
  m.channel_base = 4096
  m.channel_max = 128             # b4..b32: 128, b64: 64
  m.rank = 8
  m.biline_channels = 16
  m.bandwidth = 10.0
  m.fc_clamp = 256.0
  m.decoder_widths = (32, 64, 32, 16)
  m.refine_channels = (32, 16)
  m.coord_convention = "linspace"

  d = config.discriminator
  d.channel_base = 2048            # b64: 32, b32: 64, b16..b4: 128 channels:
  d.channel_max = 128             # ~0.18 GMACs per image, affordable on 2 CPU cores

  t = config.train
  t.batch_size = 8                # more updates per CPU-second than 16 (same images/s)
  t.total_kimg = 10000            # stopped by time, not by kimg
  t.r1_gamma = 0.1                # 0.0002 * res^2 / batch (StyleGAN2-ADA's heuristic)
  t.ema_kimg = t.batch_size * 10 / 32

  config.data.name = "image_folder"
  config.data.source = os.path.abspath(os.path.join(SHARED, "celeba_align_6000.zip"))
  config.data.crop_box = (15, 35, 163, 183)
  config.data.resolution = res
  config.data.split = "train"

  config.eval.metrics = "swd"
  config.eval.every_steps = 250
  config.eval.num_samples = 810
  config.eval.real_split = "holdout"

  config.log_every_steps = 20
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 250
  config.num_sample_images = 16
  config.progress_bar = True
  return config
