"""One process of the two-process training test (run by test_distributed.py).

argv: process_id port workdir data_dir out_npz
"""

import os
import sys

# Two devices per process; any other XLA flag of the caller's is kept.
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if not f.startswith("--xla_force_host_platform_device_count")] +
    ["--xla_force_host_platform_device_count=2"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  process_id, port, workdir, data_dir, out = sys.argv[1:6]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=int(process_id))
  assert jax.process_count() == 2 and jax.device_count() == 4
  from gen_synth import train  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  config = helpers.load_config("creps_ffhq.py", "tiny")
  config.data.data_dir = data_dir
  config.data.num_demo_crops = 64
  config.train.batch_size = 8
  config.train.total_steps = 3
  config.train.pl_weight = 0.0   # regularisers: covered by the 8-device test;
  config.train.r1_gamma = 0.0    # one compiled step keeps this test short
  config.checkpoint_every_steps = 3
  config.sample_every_steps = 0
  config.progress_bar = False
  state = train.train_and_evaluate(config, workdir)
  leaves = jax.tree.leaves(jax.device_get((state.g_params, state.d_params, state.g_ema_params)))
  np.savez(out, *leaves, step=int(jax.device_get(state.step)))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
