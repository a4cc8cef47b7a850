r"""Trains a pixel-synthesis GAN.

  python -m gen_synth.main --config=configs/creps_ffhq.py:tiny --workdir=/tmp/creps_tiny
  python -m gen_synth.main --config=configs/creps_ffhq.py:res=256 --workdir=gs://b/run \
      --config.data.data_dir=gs://b/tfds --config.train.r1_gamma=2 --multihost

Resumes automatically from WORKDIR. One process per host; `--multihost`
calls `jax.distributed.initialize()` (arguments from the environment on TPU
pods / SLURM, or --coordinator_address/--num_processes/--process_id).
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize().")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's id (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_checkpoint_logs():
  """orbax logs every save at INFO in detail; keep its warnings only."""
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= logging.WARNING or "orbax" not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  _quiet_checkpoint_logs()
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
  from gen_synth import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
