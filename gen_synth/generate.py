r"""Generates images from seeds, at any size, whole or tile by tile.

  python -m gen_synth.generate --workdir=DIR --seeds=0-7 --outdir=out
  python -m gen_synth.generate --config=configs/creps_ffhq.py:tiny --init_seed=0 \
      --seeds=0-3 --height=96 --width=160 --tile=32 --save_npy --outdir=out

Writes OUTDIR/seed%04d.png (and seed%04d.npy, the float output, with
--save_npy). Latents are drawn as the official gen_images.py draws them.
Without a checkpoint the generator is randomly initialised (--init_seed).

Any-scale (gen_synth.anyscale; pixel-independent models only):
  # a 16384^2 poster streamed into a PNG tile-row by tile-row (bounded memory)
  python -m gen_synth.generate --config=configs/creps_ffhq.py:res=256 --seeds=0 \
      --height=16384 --width=16384 --tile=1024 --stream_to=/tmp/poster.png
  # shifted (pixels; the content moves down/right), zoomed (x2 in), rotated (degrees, CCW)
  python -m gen_synth.generate --config=configs/creps_ffhq.py:tiny --seeds=0 \
      --translate=8,-4 --zoom=2 --rotate=30 --outdir=/tmp/out
  # interpolation grid (slerp in z) and a looping GIF through seeds 0, 1, 2
  python -m gen_synth.generate --config=configs/creps_ffhq.py:tiny --seeds=0-2 \
      --interpolate=8 --outdir=/tmp/out

User errors (a missing --workdir, a bad --seeds, ...) end in one `error:` line
and exit status 2 (gen_synth.cli); flag values are checked before any model is
built.
"""

import os

from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image

from gen_synth import anyscale
from gen_synth import cli
from gen_synth import sampling



def generate(model, variables, seeds, outdir, height, width, truncation_psi=1.0,
             truncation_cutoff=None, tile=None, save_npy=False, batch_size=4,
             translate=(0.0, 0.0), zoom=1.0, rotate=0.0):
  """Renders `seeds` into OUTDIR/seed%04d.png; returns the written paths.

  translate (dy, dx) pixels / zoom / rotate (degrees): coordinate transforms,
  see gen_synth.anyscale.
  """
  os.makedirs(outdir, exist_ok=True)
  transformed = tuple(translate) != (0, 0) or zoom != 1 or rotate % 360 != 0
  reason = sampling.cannot_tile_reason(model) if tile or transformed else None
  if reason:
    raise sampling.CannotTileError(reason)
  paths = []
  for start in range(0, len(seeds), batch_size):
    chunk = seeds[start:start + batch_size]
    z = sampling.seed_latents(chunk, model.z_dim)
    ws = sampling.map_latents(model, variables, z, truncation_psi, truncation_cutoff)
    if transformed:
      images = anyscale.render_transformed(model, variables, ws, height, width, translate,
                                           zoom, rotate, tile=tile)
    else:
      images = sampling.render(model, variables, ws, height, width, tile=tile)
    for seed, image in zip(chunk, images):
      path = os.path.join(outdir, f"seed{seed:04d}.png")
      Image.fromarray(sampling.to_uint8(image)).save(path)
      if save_npy:
        np.save(os.path.join(outdir, f"seed{seed:04d}.npy"), image)
      paths.append(path)
  return paths


def stream(model, variables, seeds, path, height, width, truncation_psi=1.0,
           truncation_cutoff=None, tile=None, translate=(0.0, 0.0), zoom=1.0, rotate=0.0,
           dtype="uint8"):
  """Streams each seed's image into `path` (path_seed%04d.ext for several seeds)."""
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  root, ext = os.path.splitext(path)
  paths = []
  for seed in seeds:
    out = path if len(seeds) == 1 else f"{root}_seed{seed:04d}{ext}"
    ws = sampling.map_latents(model, variables, sampling.seed_latents([seed], model.z_dim),
                              truncation_psi, truncation_cutoff)
    paths.append(anyscale.stream_render(model, variables, ws, out, height, width,
                                        tile or 1024, translate, zoom, rotate, dtype=dtype))
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
  flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                    "The generator's compute dtype (parameters stay float32; on a CPU with "
                    "AVX512-BF16, bfloat16 runs CREPS about 1.8x faster).")
  flags.DEFINE_string(
      "stream_to", None, "Stream each image tile-row by tile-row into PATH.{png,npy,tif} "
      "(bounded memory at any size; several seeds get _seed%04d before the extension).")
  flags.DEFINE_enum("stream_dtype", "uint8", ["uint8", "float16", "float32"],
                    "Pixel type of --stream_to .npy/.tif files.")
  flags.DEFINE_string("translate", None,
                      "'dy,dx' pixels: the content moves dy down and dx right.")
  flags.DEFINE_float("zoom", 1.0, "Magnification about the image centre (>1 zooms in).")
  flags.DEFINE_float("rotate", 0.0, "Counter-clockwise rotation in degrees about the image "
                     "centre (90 equals np.rot90 of the plain image).")
  flags.DEFINE_integer(
      "interpolate", None, "N steps between consecutive seeds: writes OUTDIR/interp_grid.png "
      "(a row per seed pair) and OUTDIR/interp.gif (a loop through the seeds).")
  flags.DEFINE_enum("interpolate_space", "z", ["z", "w"],
                    "Interpolate with slerp in z or with lerp in w.")


_STREAM_EXTENSIONS = (".png", ".npy", ".tif", ".tiff")


def _parse_seeds(spec: str) -> list:
  """--seeds as a list of seeds in [0, 2**32) (UserError otherwise)."""
  try:
    seeds = sampling.parse_seeds(spec)
  except ValueError:
    raise cli.UserError(f"--seeds={spec}: expected e.g. '0-7' or '1,5,9'.") from None
  if not seeds:
    raise cli.UserError(f"--seeds={spec!r} selects no seed: e.g. '0-7' or '1,5,9'.")
  bad = [s for s in seeds if not 0 <= s < 2**32]
  if bad:
    raise cli.UserError(f"--seeds={spec}: seeds must be in [0, 2**32), got {bad[0]}.")
  return seeds


def _parse_translate(spec) -> tuple:
  """--translate 'dy,dx' -> (dy, dx) floats; (0, 0) when unset."""
  if not spec:
    return (0.0, 0.0)
  try:
    dy, dx = (float(v) for v in spec.split(","))
  except ValueError:
    raise cli.UserError(f"--translate={spec}: expected 'dy,dx', e.g. 8,-4.") from None
  return (dy, dx)


def _check_flags():
  """UserError for flag values that cannot work, before any model is built."""
  for name in ("height", "width", "tile", "interpolate"):  # 0 / unset: the default
    value = FLAGS[name].value
    if value is not None and value < 0:
      raise cli.UserError(f"--{name}={value} must not be negative.")
  if FLAGS.batch_size <= 0:
    raise cli.UserError(f"--batch_size={FLAGS.batch_size} must be positive.")
  if FLAGS.zoom == 0:
    raise cli.UserError("--zoom=0 divides by zero: e.g. --zoom=2 zooms in, 0.5 out.")
  if FLAGS.stream_to:
    ext = os.path.splitext(FLAGS.stream_to)[1].lower()
    if ext not in _STREAM_EXTENSIONS:
      raise cli.UserError(f"--stream_to={FLAGS.stream_to} must end in "
                          f"{', '.join(_STREAM_EXTENSIONS)}.")
    if ext == ".png" and FLAGS.stream_dtype != "uint8":
      raise cli.UserError("PNG output is 8-bit: use --stream_to=PATH.npy or .tif "
                          f"with --stream_dtype={FLAGS.stream_dtype}.")


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_checkpoint_logs()
  _check_flags()
  seeds = _parse_seeds(FLAGS.seeds)
  translate = _parse_translate(FLAGS.translate)
  if FLAGS.interpolate and len(seeds) < 2:
    raise cli.UserError(f"--interpolate needs at least two seeds, got --seeds={FLAGS.seeds}.")
  cli.check_generator_source(FLAGS.workdir, cli.config_flag(), FLAGS.step)
  model, variables, config, step = sampling.load_generator(
      FLAGS.workdir, FLAGS.config, FLAGS.init_seed, FLAGS.step, dtype=FLAGS.compute_dtype)
  res = config.model.resolution
  height, width = FLAGS.height or res, FLAGS.width or res
  try:
    if FLAGS.interpolate:
      paths = anyscale.write_interpolation(
          model, variables, seeds, FLAGS.interpolate, FLAGS.outdir, height, width,
          FLAGS.interpolate_space, FLAGS.trunc, FLAGS.batch_size)
    elif FLAGS.stream_to:
      paths = stream(model, variables, seeds, FLAGS.stream_to, height, width, FLAGS.trunc,
                     FLAGS.trunc_cutoff, FLAGS.tile, translate, FLAGS.zoom, FLAGS.rotate,
                     FLAGS.stream_dtype)
    else:
      paths = generate(model, variables, seeds, FLAGS.outdir, height, width, FLAGS.trunc,
                       FLAGS.trunc_cutoff, FLAGS.tile, FLAGS.save_npy, FLAGS.batch_size,
                       translate, FLAGS.zoom, FLAGS.rotate)
  except sampling.CannotTileError as e:  # raised before any pixel is computed
    raise cli.UserError(e) from e
  source = f"checkpoint step {step}" if step is not None else f"random init (seed {FLAGS.init_seed})"
  if FLAGS.interpolate:
    print(f"wrote the interpolation grid and GIF of {height}x{width} images from {source}: "
          f"{list(paths)}")
  elif FLAGS.stream_to:
    print(f"streamed {len(paths)} images of {height}x{width} from {source} to {paths}")
  else:
    print(f"wrote {len(paths)} images of {height}x{width} from {source} to {FLAGS.outdir}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
