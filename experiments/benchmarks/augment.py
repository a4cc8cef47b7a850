r"""The ADA augmentation pipe: gen_synth against the official AugmentPipe, side by side.

  python experiments/benchmarks/augment.py --res=64,256 --batch=8 --p=0.6 \
      --official_repo=PATH/TO/CREPS --official_python=PATH/TO/torch/python

ADA (the training default) puts the pipe in front of every D evaluation, so
training with it pays for three jobs per image, timed here on their own:

- fwd: `augment(key, x, p, 'bgc')` (D on augmented reals, Dmain).
- vjp: the gradient w.r.t. the images of <augment(x), w> (G's gradient through
  D(augment(G(z))), Gmain and Dmain).
- r1:  the gradient w.r.t. w of |d<augment(x), w>/dx|^2 (R1 through the pipe
  differentiates it twice, Dreg).

gen_synth: each job jitted (gen_synth/xla_cpu.py), a fresh key per call.
Official: VinAIResearch/CREPS `training/augment.AugmentPipe` with the `bgc`
spec of its train.py, imported from --official_repo (never copied), fp32 on
the CPU, `grid_sample_gradfix` enabled as its training loop does (needed for
the second order), p fixed. Both report the median seconds of --reps calls
after one warm-up call; each case runs in its own process. The pipe is
memory-bound resampling, not GEMMs, so there is no "% of GEMM peak" here; the
table gives the speed-up only. Prints one JSON line per case and a markdown
table; --out appends the JSON.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

import harness

_RES = flags.DEFINE_list("res", ["64", "256"], "Image sizes (square).")
_BATCH = flags.DEFINE_integer("batch", 8, "Images per call.")
_P = flags.DEFINE_float("p", 0.6, "Augmentation probability (ADA's target r_t is 0.6).")
_REPS = flags.DEFINE_integer("reps", 5, "Timed calls per job (median reported).")
_OFFICIAL_REPO = flags.DEFINE_string("official_repo", None, "A clone of VinAIResearch/CREPS.")
_OFFICIAL_PY = flags.DEFINE_string("official_python", sys.executable,
                                   "Python with torch for the official code.")
_OUT = flags.DEFINE_string("out", None, "Append the JSON lines to this file.")
_WORKER = flags.DEFINE_enum("worker", None, ["gen_synth"], "Internal: run one case.")

JOBS = ("fwd", "vjp", "r1")


def gen_synth_worker(res, batch, p, reps):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gen_synth import augment, xla_cpu  # pylint: disable=g-import-not-at-top
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch, res, res, 3), minval=-1, maxval=1)
  w = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  p = jnp.float32(p)
  aug = lambda key, x: augment.augment(key, x, p, "bgc")
  fns = {
      "fwd": lambda key, x, w: aug(key, x),
      "vjp": lambda key, x, w: jax.grad(lambda x: jnp.vdot(aug(key, x), w))(x),
      "r1": lambda key, x, w: jax.grad(lambda w: jnp.sum(jnp.square(
          jax.grad(lambda x: jnp.vdot(aug(key, x), w))(x))))(w),
  }
  s, compile_s = {}, {}
  for job in JOBS:
    t = time.perf_counter()
    compiled = xla_cpu.jit(fns[job]).lower(jax.random.PRNGKey(2), x, w).compile()
    compile_s[job] = time.perf_counter() - t
    jax.block_until_ready(compiled(jax.random.PRNGKey(3), x, w))
    times = []
    for i in range(reps):
      key = jax.random.PRNGKey(100 + i)
      t = time.perf_counter()
      jax.block_until_ready(compiled(key, x, w))
      times.append(time.perf_counter() - t)
    s[job] = float(np.median(times))
  return {"impl": "gen_synth", "res": res, "batch": batch, "p": float(p), "s": s,
          "compile_s": compile_s, "xla_cpu_options": xla_cpu.compiler_options(),
          "peak_rss_mib": harness.peak_rss_mib()}


def table(results):
  rows = ["| size | batch | job | official s | gen_synth s | speed-up |", "|---" * 6 + "|"]
  for r in [r for r in results if r["impl"] == "gen_synth"]:
    o = next((o for o in results if o["impl"] == "official" and o["res"] == r["res"]
              and o["batch"] == r["batch"]), None)
    for job in JOBS:
      ours = r["s"][job]
      theirs = "-" if o is None else f"{o['s'][job]:.4f}"
      speedup = "-" if o is None else f"{o['s'][job] / ours:.2f}x"
      rows.append(f"| {r['res']} | {r['batch']} | {job} | {theirs} | {ours:.4f} | {speedup} |")
  return "\n".join(rows)


def main(argv):
  del argv
  if _WORKER.value == "gen_synth":
    print(json.dumps(gen_synth_worker(int(_RES.value[0]), _BATCH.value, _P.value, _REPS.value)))
    return
  me = [sys.executable, os.path.abspath(__file__), f"--batch={_BATCH.value}", f"--p={_P.value}",
        f"--reps={_REPS.value}"]
  official_worker = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "official_augment_worker.py")
  runs = harness.Collector(_OUT.value)
  for res in _RES.value:
    runs.run(me + ["--worker=gen_synth", f"--res={res}"])
    if _OFFICIAL_REPO.value:
      runs.run([_OFFICIAL_PY.value, official_worker, f"--official_repo={_OFFICIAL_REPO.value}",
                f"--res={res}", f"--batch={_BATCH.value}", f"--p={_P.value}",
                f"--reps={_REPS.value}"])
  print(table(runs.results))


if __name__ == "__main__":
  app.run(main)
