r"""D's forward, forward+backward and R1 gradient with each convolution implementation, one run.

  python experiments/benchmarks/discriminator.py --res=128 --batch=4 --impls=xla,maps,gemm

Times (best of --reps after a first call) jit(D), jit(grad of the D loss)
and jit(grad of R1), for each `conv_impl` (models/conv_ops.py: 'xla', JAX's own convolution
gradients; 'maps', every order one of the three first-order convolutions;
'gemm', the same with shifted-GEMM weight gradients), compiled with
gen_synth's XLA:CPU kernels (gen_synth/xla_cpu.py),
prints one JSON line per case with XLA's FLOP count and the f32 GEMM peak
measured in the same run, and the largest relative difference between the
implementations (logits, gradients).
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

import harness

from gen_synth import cost
from gen_synth import losses
from gen_synth import xla_cpu
from gen_synth.models import discriminator as discriminator_lib

_RES = flags.DEFINE_integer("res", 128, "Resolution.")
_BATCH = flags.DEFINE_integer("batch", 4, "Batch.")
_IMPLS = flags.DEFINE_list("impls", ["xla", "maps", "gemm"], "conv_impl values.")
_REPS = flags.DEFINE_integer("reps", 2, "Timed calls (best is reported).")


def _compile(fn, *args):
  """(compiled fn, its FLOPs by XLA's cost analysis, compile seconds)."""
  t = time.perf_counter()
  compiled = xla_cpu.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - t
  return compiled, cost.xla_flops(compiled), seconds


def main(argv):
  del argv
  harness.start_worker()
  res, batch = _RES.value, _BATCH.value
  x = jax.random.uniform(jax.random.PRNGKey(1), (batch, res, res, 3), minval=-1, maxval=1)
  peak = harness.gemm_peak_gflops()
  outs = {}
  for impl in _IMPLS.value:
    d = discriminator_lib.Discriminator(resolution=res, conv_impl=impl)
    params = jax.jit(d.init)(jax.random.PRNGKey(0), x)["params"]
    fns = {
        "forward": lambda p, x: d.apply({"params": p}, x),
        "forward_backward": jax.grad(lambda p, x: jnp.mean(jax.nn.softplus(
            d.apply({"params": p}, x)))),
        "r1_gradient": jax.grad(lambda p, x: jnp.mean(losses.r1_penalty(
            lambda y: d.apply({"params": p}, y), x)[0])),
    }
    outs[impl] = {}
    for name, fn in fns.items():
      compiled, flops, compile_s = _compile(fn, params, x)
      best, out = harness.best_time(compiled, params, x, reps=_REPS.value)
      outs[impl][name] = out
      print(json.dumps({"impl": impl, "res": res, "batch": batch, "case": name, "s": best,
                        "compile_s": compile_s, "gflop": flops / 1e9,
                        "pct_of_gemm_peak": 100 * flops / best / (peak * 1e9),
                        "gemm_peak_gflops": peak}), flush=True)
  if len(outs) > 1:
    a, *rest = list(outs.values())
    for b in rest:
      for name in a:
        diffs = jax.tree.map(
            lambda u, v: float(jnp.max(jnp.abs(u - v))) / max(float(jnp.max(jnp.abs(u))), 1e-30),
            a[name], b[name])
        print(json.dumps({"case": name, "max_rel_difference": max(jax.tree.leaves(diffs))}))
  print(json.dumps({"gemm_peak_gflops_end": harness.gemm_peak_gflops()}))


if __name__ == "__main__":
  app.run(main)
