r"""Prints a generator's trainable parameter counts and cost as one JSON object.

  python -m gen_synth.summary --config=configs/creps_ffhq.py:res=512

Keys: `params` (trainable total), `params_mapping`, `params_synthesis`,
`params_per_module` (top-level modules), `macs` (multiply-accumulates of
dot/conv ops for one image, read from the lowered computation, comparable to
PyTorch's FLOP counter), `flops_xla` (XLA's cost analysis, all ops),
`resolution`, `num_ws`, `non_trainable` (element counts per collection).
A missing --config or a bad size ends in one `error:` line, exit status 2
(gen_synth.cli).
"""

import json

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from gen_synth import cli
from gen_synth import cost
from gen_synth import sampling



def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def summarize(config, height=None, width=None) -> dict:
  model = sampling.build_model(config)
  variables = jax.eval_shape(lambda: sampling.init_variables(model))
  params = variables["params"]
  per_module = {name: count(sub) for name, sub in params.items()}
  height = height or config.model.resolution
  width = width or config.model.resolution
  z = jax.ShapeDtypeStruct((1, model.z_dim), jnp.float32)
  rngs = {"noise": jax.random.PRNGKey(0)}
  counted = cost.one_pass(model)   # loops are counted once
  costs = cost.cost(lambda v, z: counted.apply(v, z, height=height, width=width, rngs=rngs),
                    variables, z)
  return {
      "model": config.model.name,
      "resolution": config.model.resolution,
      "height": height, "width": width,
      "num_ws": model.num_ws,
      "params": count(params),
      "params_mapping": per_module.get("mapping", 0),
      "params_synthesis": count(params) - per_module.get("mapping", 0),
      "params_per_module": per_module,
      "non_trainable": {k: count(v) for k, v in variables.items() if k != "params"},
      "macs": costs["macs"],
      "gmacs": round(costs["macs"] / 1e9, 3),
      "flops_xla": costs["flops_xla"],
  }

FLAGS = flags.FLAGS


def define_flags():
  """CLI flags; defined only when run as a program, so the module stays importable."""
  config_flags.DEFINE_config_file("config", None, "Model config.", lock_config=True)
  flags.DEFINE_integer("height", None, "Height for the cost (default: resolution).")
  flags.DEFINE_integer("width", None, "Width for the cost (default: resolution).")


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_checkpoint_logs()
  if cli.config_flag() is None:
    raise cli.UserError("--config is required, e.g. --config=configs/creps_ffhq.py:res=256.")
  for name in ("height", "width"):
    if FLAGS[name].value is not None and FLAGS[name].value < 0:  # 0: the resolution
      raise cli.UserError(f"--{name}={FLAGS[name].value} must not be negative.")
  print(json.dumps(summarize(FLAGS.config, FLAGS.height, FLAGS.width), indent=2))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
