r"""Trains a pixel-synthesis GAN.

  python -m gen_synth.main --config=configs/creps_ffhq.py:tiny --workdir=/tmp/creps_tiny
  python -m gen_synth.main --config=configs/creps_ffhq.py:res=256 --workdir=gs://b/run \
      --config.data.data_dir=gs://b/tfds --config.train.r1_gamma=2 --multihost

Resumes automatically from WORKDIR, loading the compiled training phases from
the persistent compilation cache in WORKDIR/compilation_cache
(`--compilation_cache`). One process per host; `--multihost`
calls `jax.distributed.initialize()` (arguments from the environment on TPU
pods / SLURM, or --coordinator_address/--num_processes/--process_id).

Before any model is built, a pre-flight check looks at the flags, the workdir
(a writable folder, or one that can be created) and the data (the tfds build
`config.data` names is prepared, with its split); a problem there ends in one
`error:` line with what to do (e.g. the `prepare_data` command) and exit
status 2 (gen_synth.cli).
"""

import os

from absl import flags
from absl import logging
from ml_collections import config_flags

from gen_synth import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize().")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's id (multi-host).")
flags.DEFINE_string(
    "compilation_cache", "auto",
    "JAX's persistent compilation cache, so a restarted run loads its compiled "
    "phases: 'auto' = JAX_COMPILATION_CACHE_DIR if set, else "
    "WORKDIR/compilation_cache; 'none' = off; or a folder (gen_synth.compilation_cache).")
flags.mark_flags_as_required(["config", "workdir"])


def _check_flags():
  """UserError for multi-host flags that cannot work."""
  n, i = FLAGS.num_processes, FLAGS.process_id
  if n is not None and n < 1:
    raise cli.UserError(f"--num_processes={n} must be at least 1.")
  if i is not None and (i < 0 or (n is not None and i >= n)):
    raise cli.UserError(f"--process_id={i} must be in [0, --num_processes={n}).")


def _check_config(config, workdir):
  """UserError for config values that would only fail after the model is built."""
  if config.train.batch_size <= 0:
    raise cli.UserError(f"config.train.batch_size={config.train.batch_size} must be positive.")
  init_from = config.get("init_from")
  if init_from and not cli.checkpoint_steps(workdir) and not cli.checkpoint_steps(init_from):
    raise cli.UserError(f"config.init_from={init_from} has no checkpoint: pass the workdir "
                        "of a finished gen_synth.main run.")


def preflight(config, workdir):
  """Cheap checks of the flags, the workdir, the config and the data (and the
  Inception weights of periodic FID/KID), before anything is built."""
  _check_flags()
  cli.check_writable_dir(workdir)
  _check_config(config, workdir)
  splits = [config.data.split]
  evaluation = config.get("eval")
  if evaluation and evaluation.get("every_steps"):
    names = [m.strip() for m in evaluation.get("metrics", "").split(",") if m.strip()]
    if cli.check_metrics(config, names):
      splits.append(config.eval.get("real_split") or config.data.split)
  cli.check_data(config.data, list(dict.fromkeys(splits)))


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_checkpoint_logs()
  preflight(cli.config_flag(), FLAGS.workdir)
  # TensorFlow (tfds) must not take the accelerators from JAX.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.multihost or FLAGS.coordinator_address:
    if FLAGS.coordinator_address:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  logging.info("JAX process %d / %d", jax.process_index(), jax.process_count())
  from gen_synth import compilation_cache  # pylint: disable=g-import-not-at-top
  logging.info("Compilation cache: %s",
               compilation_cache.enable(FLAGS.compilation_cache, FLAGS.workdir))
  from gen_synth import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cli.run(main)
