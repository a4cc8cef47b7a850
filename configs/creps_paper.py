r"""The CREPS paper's training runs (Table 2), each with the official command's flags.

`--config=configs/creps_paper.py:run=NAME`, NAME one of:

  ffhq512       the CREPS README: `train.py --cfg=creps --data=ffhq-512x512.zip
                --gpus=8 --batch=32 --gamma=8.2 --mirror=1` (no --aug: ADA, the default)
  ffhq1024      `train.py --help`'s example: `--cfg=creps --data=ffhq-1024x1024.zip
                --gpus=8 --batch=32 --gamma=10 --mirror=1 --aug=noaug`. The paper's
                FFHQ-1024 FID (4.09, marked with a double dagger) is the FFHQ-512 model
                rendered at 1024: `python -m gen_synth.evaluate --workdir=<ffhq512 run>
                --height=1024 --width=1024` needs no training.
  metfaces1024  the CREPS README's fine-tune: `--data=metfaces-1024x1024.zip --gamma=6.6
                --mirror=1 --kimg=5000 --snap=5 --resume=creps-ffhq-512x512.pkl`, ADA on.
                `--resume` also makes train.py set ada_kimg=100 (ADA reacts faster),
                ema_rampup=None and no blur. Set `--config.init_from=` to the FFHQ-512 run
                directory (a gen_synth run or `gen_synth.import_official` of the published
                pickle). What is loaded and what starts fresh: see `train._transfer_from`
                (every tensor whose name and shape match: G's and D's 1024 blocks are
                new at 1024 and start fresh; Adam, step, PL mean and ADA's p start fresh).
  church256     LSUN-Church 256: no official command. train.py's defaults (ADA on),
  scenery256    Flickr-Scenery 256: likewise; gamma 2 by configs.md's rule of thumb
                (gamma grows with resolution squared: 2 at 256, 8 at 512), --mirror=1.

All runs: batch 32 (global), 25,000 kimg unless the command says otherwise, the
CREPS widths (`configs/creps_ffhq.py`). Datasets are prepared with
`python -m gen_synth.prepare_data --dataset=<data.name> --resolution=<res>`.
"""

import importlib.util
import os

from gen_synth import config_utils

RUNS = {
    #  name            res   data name         gamma  augment  kimg
    "ffhq512": (512, "ffhq", 8.2, "ada", 25000),
    "ffhq1024": (1024, "ffhq", 10.0, "none", 25000),
    "metfaces1024": (1024, "metfaces", 6.6, "ada", 5000),
    "church256": (256, "lsun_church", 2.0, "ada", 25000),
    "scenery256": (256, "flickr_scenery", 2.0, "ada", 25000),
}


def _creps_ffhq():
  """configs/creps_ffhq.py beside this file (config files are loaded by path)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "creps_ffhq.py")
  spec = importlib.util.spec_from_file_location("gen_synth_configs_creps_ffhq", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, run="ffhq512")
  if arg.run not in RUNS:
    raise ValueError(f"run must be one of {sorted(RUNS)}, got {arg.run!r}")
  res, data_name, gamma, augment, kimg = RUNS[arg.run]
  config = _creps_ffhq().get_config(f"res={res}")
  config.data.name = data_name
  config.data.xflip = True              # --mirror=1 in every command
  t = config.train
  t.batch_size = 32
  t.ema_kimg = t.batch_size * 10 / 32
  t.r1_gamma = gamma
  t.augment = augment
  t.total_kimg = kimg
  if arg.run == "metfaces1024":           # what train.py's --resume changes
    t.ada_kimg = 100
    t.ema_rampup = None
    config.checkpoint_every_steps = 5 * 4000 // t.batch_size   # --snap=5 ticks of 4 kimg
  return config
