r"""Generates images from seeds, at any size, whole or tile by tile.

  python -m gen_synth.generate --workdir=DIR --seeds=0-7 --outdir=out
  python -m gen_synth.generate --config=configs/creps_ffhq.py:tiny --init_seed=0 \
      --seeds=0-3 --height=96 --width=160 --tile=32 --save_npy --outdir=out

Writes OUTDIR/seed%04d.png (and seed%04d.npy, the float output, with
--save_npy). Latents are drawn as the official gen_images.py draws them.
Without a checkpoint the generator is randomly initialised (--init_seed).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image

from gen_synth import sampling



def generate(model, variables, seeds, outdir, height, width, truncation_psi=1.0,
             truncation_cutoff=None, tile=None, save_npy=False, batch_size=4):
  """Renders `seeds` into OUTDIR/seed%04d.png; returns the written paths."""
  os.makedirs(outdir, exist_ok=True)
  reason = sampling.cannot_tile_reason(model) if tile else None
  if reason:
    raise sampling.CannotTileError(reason)
  paths = []
  for start in range(0, len(seeds), batch_size):
    chunk = seeds[start:start + batch_size]
    z = sampling.seed_latents(chunk, model.z_dim)
    ws = sampling.map_latents(model, variables, z, truncation_psi, truncation_cutoff)
    images = sampling.render(model, variables, ws, height, width, tile=tile)
    for seed, image in zip(chunk, images):
      path = os.path.join(outdir, f"seed{seed:04d}.png")
      Image.fromarray(sampling.to_uint8(image)).save(path)
      if save_npy:
        np.save(os.path.join(outdir, f"seed{seed:04d}.npy"), image)
      paths.append(path)
  return paths

FLAGS = flags.FLAGS


def define_flags():
  """CLI flags; defined only when run as a program, so the module stays importable."""
  config_flags.DEFINE_config_file("config", None, "Model config (random init).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (config.json + checkpoints).")
  flags.DEFINE_string("outdir", "generated", "Where the images go.")
  flags.DEFINE_string("seeds", "0-3", "Seeds, e.g. '0-7' or '1,5,9'.")
  flags.DEFINE_integer("height", None, "Output height (default: the model resolution).")
  flags.DEFINE_integer("width", None, "Output width (default: the model resolution).")
  flags.DEFINE_float("trunc", 1.0, "Truncation psi.")
  flags.DEFINE_integer("trunc_cutoff", None, "Truncate only the first N ws.")
  flags.DEFINE_integer("init_seed", 0, "Seed of the random init without checkpoint.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_integer("tile", None, "Compute the image in TILE x TILE pieces.")
  flags.DEFINE_bool("save_npy", False, "Also write the float32 output as .npy.")
  flags.DEFINE_integer("batch_size", 4, "Images per generator call.")


def main(argv):
  del argv
  model, variables, config, step = sampling.load_generator(
      FLAGS.workdir, FLAGS.config, FLAGS.init_seed, FLAGS.step)
  res = config.model.resolution
  height, width = FLAGS.height or res, FLAGS.width or res
  try:
    paths = generate(model, variables, sampling.parse_seeds(FLAGS.seeds), FLAGS.outdir,
                     height, width, FLAGS.trunc, FLAGS.trunc_cutoff, FLAGS.tile,
                     FLAGS.save_npy, FLAGS.batch_size)
  except (sampling.CannotTileError, ValueError) as e:
    sys.exit(f"error: {e}")
  source = f"checkpoint step {step}" if step is not None else f"random init (seed {FLAGS.init_seed})"
  print(f"wrote {len(paths)} images of {height}x{width} from {source} to {FLAGS.outdir}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
