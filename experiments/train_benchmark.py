r"""Training throughput (images/s) of a config on this machine, compile time excluded.

  python experiments/train_benchmark.py --config=configs/creps_ffhq.py:tiny --steps=40
  python experiments/train_benchmark.py --config=configs/creps_ffhq.py:res=256 \
      --batch_size=4 --steps=4

Runs the real compiled step (Gmain, PL every 4, Dmain, R1 every 16, EMA) on
random images: first the steps that compile every step variant, then `--steps`
timed steps that include the lazy regularisers at their real frequency.
Prints one JSON line. Results and the commands: README.md, "Training", "Measured on this CPU".
"""

import functools
import json
import os
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from gen_synth import sharding as sharding_lib
from gen_synth import train
from gen_synth import train_steps
from gen_synth import xla_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the global batch size.")


def main(argv):
  del argv
  config = _CONFIG.value
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  mesh = sharding_lib.make_mesh()
  init = functools.partial(train_steps.init_state, generator, discriminator, g_tx, d_tx,
                           resolution=config.model.resolution)
  shardings = sharding_lib.state_shardings(mesh, jax.eval_shape(init, jax.random.PRNGKey(0)))
  state = xla_cpu.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  steps = train.CompiledSteps(config, generator, discriminator, g_tx, d_tx, mesh, shardings)
  res, batch = config.model.resolution, config.train.batch_size
  images = jax.device_put(jax.random.uniform(jax.random.PRNGKey(1), (batch, res, res, 3),
                                             minval=-1, maxval=1),
                          sharding_lib.batch_sharding(mesh))
  key = jax.random.PRNGKey(2)
  t0 = time.time()
  warmup = 5            # steps 0..4 compile (PL+R1), (none) and (PL)
  for step in range(warmup):
    state, metrics = steps(step, state, images, key)
  jax.block_until_ready(state)
  compile_s = time.time() - t0
  t0 = time.time()
  for step in range(warmup, warmup + _STEPS.value):
    state, metrics = steps(step, state, images, key)
  jax.block_until_ready(state)
  elapsed = time.time() - t0
  print(json.dumps({
      "config": config.model.name, "resolution": res, "batch_size": batch,
      "devices": str(jax.devices()[0].platform), "num_devices": jax.device_count(),
      "timed_steps": _STEPS.value, "s_per_step": elapsed / _STEPS.value,
      "images_per_s": _STEPS.value * batch / elapsed, "warmup_and_compile_s": compile_s,
      "load_avg_1min": os.getloadavg()[0], "g_loss": float(metrics["g_loss"])}))


if __name__ == "__main__":
  app.run(main)
