r"""Evaluates a generator: FID / KID / SWD against real images, scale consistency.

  python -m gen_synth.evaluate --workdir=runs/ffhq256 --metrics=fid50k,kid,swd \
      --inception_path=~/weights/inception_fid.npz
  python -m gen_synth.evaluate --config=configs/creps_ffhq.py:tiny --metrics=scale_consistency

`--metrics` is one comma list: fid50k | fid10k | fid<N>[k] | fid | kid | swd
(gen_synth.evaluation.evaluator) and scale_consistency (R vs. 2R box-downsampled,
PSNR/SSIM, gen_synth.evaluation.scale_consistency). Prints one JSON object;
with a --workdir it is also written to WORKDIR/eval/step<N>.json and to
TensorBoard (WORKDIR/eval). Without a checkpoint a --config's random init is
evaluated. Real images come from the run's `config.data` (prepare them with
gen_synth.prepare_data); FID/KID need the Inception weights file.

The metric names, the run directory, the data and the Inception weights are
checked before the generator is built; a problem ends in one `error:` line and
exit status 2 (gen_synth.cli).
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from gen_synth import cli
from gen_synth import sampling

FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config (without --workdir).",
                                  lock_config=False)
  flags.DEFINE_string("workdir", None, "Run directory (config.json + checkpoints).")
  flags.DEFINE_string("metrics", "swd", "Comma list, e.g. fid50k,kid,swd,scale_consistency.")
  flags.DEFINE_integer("num_samples", None, "Generated images for fid/kid/swd "
                       "(default config.eval.num_samples).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_integer("init_seed", 0, "Seed of the random init without checkpoint.")
  flags.DEFINE_string("inception_path", None, "Inception weights (.npz or .pth).")
  flags.DEFINE_string("data_dir", None, "Override config.data.data_dir.")
  flags.DEFINE_string("split", None, "Real-image split (default config.eval.real_split "
                      "or config.data.split).")
  flags.DEFINE_integer("scale_images", 100, "Images for scale_consistency.")
  flags.DEFINE_string("coord_convention", None,
                      "scale_consistency: 'linspace' or 'center' (default: the model's).")


def evaluate(config, model, variables, metric_names, num_samples=None, scale_images=100,
             coord_convention=None, seed=0) -> dict:
  """{metric: value} for the requested metric names."""
  # pylint: disable=g-import-not-at-top
  from gen_synth import train
  from gen_synth.evaluation import evaluator
  from gen_synth.evaluation import scale_consistency
  image_metrics = [m for m in metric_names if m != "scale_consistency"]
  for name in image_metrics:   # one-line error for an unknown name, before any work
    evaluator.parse_metric_name(name, 1)
  results = {}
  if "scale_consistency" in metric_names:
    sc = scale_consistency.scale_consistency(
        model, variables, num_images=scale_images, seed=seed,
        coord_convention=coord_convention)
    results.update({f"scale_consistency/{k}": v for k, v in sc.items()
                    if isinstance(v, (int, float))})
  if image_metrics:
    results.update(train.evaluate_generator(config, model, variables, image_metrics,
                                            num_generated=num_samples))
  return results


def _metric_names(spec: str) -> list:
  """--metrics as a list of names (UserError for none)."""
  names = [m.strip() for m in spec.split(",") if m.strip()]
  if not names:
    raise cli.UserError(f"--metrics={spec!r} names no metric, e.g. --metrics=swd.")
  return names


def _eval_config():
  """The run's (or --config's) config with this command's flags applied."""
  config = cli.check_generator_source(FLAGS.workdir, cli.config_flag(), FLAGS.step)
  with config.unlocked():
    if FLAGS.inception_path:
      config.eval.inception_path = os.path.expanduser(FLAGS.inception_path)
    if FLAGS.data_dir:
      config.data.data_dir = FLAGS.data_dir
    if FLAGS.split:
      config.eval.real_split = FLAGS.split
  return config


def _check_inputs(config, names):
  """UserError for bad sizes, unknown metrics, missing reals or Inception weights."""
  for name, value in (("num_samples", FLAGS.num_samples), ("scale_images", FLAGS.scale_images)):
    if value is not None and value <= 0:
      raise cli.UserError(f"--{name}={value} must be positive.")
  if FLAGS.coord_convention not in (None, "linspace", "center"):
    raise cli.UserError(f"--coord_convention={FLAGS.coord_convention}: 'linspace' or 'center'.")
  if cli.check_metrics(config, names):  # image metrics: real images needed
    split = config.eval.get("real_split") or config.data.split
    n = cli.check_data(config.data, [split])
    num_real = config.eval.get("num_real")
    if n is not None and num_real and num_real > n:
      raise cli.UserError(f"config.eval.num_real={num_real} but split {split!r} has "
                          f"{n} images.")


def main(argv):
  # pylint: disable=g-import-not-at-top
  from gen_synth.evaluation import inception
  cli.no_arguments(argv)
  cli.quiet_checkpoint_logs()
  names = _metric_names(FLAGS.metrics)
  config = _eval_config()
  _check_inputs(config, names)
  model, variables, _, step = sampling.load_generator(
      FLAGS.workdir, FLAGS.config, FLAGS.init_seed, FLAGS.step)
  try:
    results = evaluate(config, model, variables, names, FLAGS.num_samples,
                       FLAGS.scale_images, FLAGS.coord_convention, config.train.seed)
  except inception.MissingInceptionWeightsError as e:
    raise cli.UserError(e) from e
  out = {"step": step, "source": FLAGS.workdir or "random init", **results}
  print(json.dumps(out, indent=2))
  if FLAGS.workdir:
    eval_dir = os.path.join(FLAGS.workdir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, f"step{step or 0}.json"), "w") as f:
      json.dump(out, f, indent=2)
    from clu import metric_writers  # pylint: disable=g-import-not-at-top  (TensorFlow: slow)
    writer = metric_writers.create_default_writer(eval_dir)
    writer.write_scalars(step or 0, {k: float(v) for k, v in results.items()})
    writer.flush()


if __name__ == "__main__":
  define_flags()
  cli.run(main)
