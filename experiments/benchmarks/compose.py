r"""CREPS's per-pixel half (`CREPS.compose`) in one pass and in tiles, one run.

  python experiments/benchmarks/compose.py --config=configs/creps_ffhq.py:res=256 \
      --batch=4 --tiles=0,4096,8192,16384

`compose` turns the row and column lines into the image: the thick bi-line
einsum, the decoders, to-image and the refinement blocks, every one applied
to each pixel (narrow GEMMs, K = 32-128, and elementwise passes). For each
`compose_tile_pixels` in --tiles (0: the whole batch in one pass) this times
jit(compose) and jit(grad of a linear image loss w.r.t. the parameters and
both line inputs) (best of --reps after a first call), compiled with
gen_synth's XLA:CPU kernels. FLOPs are XLA's cost analysis of the one-pass
program (a loop body is counted once; the tiles' recomputation is not
counted), "% peak" a fraction of the f32 GEMM peak measured in the same run
(before and after the cases). Prints one JSON line per case, the largest
difference of each case's image and gradients from the one-pass ones
(relative to each array's largest magnitude), and a markdown table. The
loss weighs pixels with both signs, so a weight gradient is a small sum of
large terms, and a pre-activation that rounds to the other side of the lrelu
kink moves it visibly: expect gradient differences of 1e-2 at res 256, of the
size of one pass's own distance from a float64 computation.
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

import harness

from gen_synth import cost
from gen_synth import sampling
from gen_synth import xla_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "A CREPS config.")
_BATCH = flags.DEFINE_integer("batch", 4, "Batch.")
_TILES = flags.DEFINE_list("tiles", ["0", "8192"], "compose_tile_pixels values (0 = one pass).")
_REPS = flags.DEFINE_integer("reps", 3, "Timed calls (best is reported).")


def _jobs(model, variables, ws):
  """{'forward': fn, 'forward_backward': fn}, each (params, rows, cols) -> arrays."""
  def image(params, row_feats, col_feats):
    return model.apply({**variables, "params": params}, ws, row_feats, col_feats,
                       method="compose")

  def loss(params, row_feats, col_feats):
    images = image(params, row_feats, col_feats)
    pattern = jnp.cos(jnp.arange(images.size, dtype=jnp.float32)).reshape(images.shape)
    return jnp.sum(images * pattern)

  return {"forward": image, "forward_backward": jax.grad(loss, argnums=(0, 1, 2))}


def _max_rel_difference(a, b):
  diffs = jax.tree.map(
      lambda u, v: float(jnp.max(jnp.abs(u - v))) / max(float(jnp.max(jnp.abs(v))), 1e-30), a, b)
  return max(jax.tree.leaves(diffs))


def table(results):
  peak = harness.mean_gemm_peak(results)
  cases = [r for r in results if r.get("case")]
  rows = ["| compose_tile_pixels | job | s | GFLOP | % peak | speed-up vs one pass "
          "| max rel. difference |", "|---" * 7 + "|"]
  for r in cases:
    base = next(o for o in cases if o["tile"] == 0 and o["case"] == r["case"])
    rows.append(f"| {r['tile'] or 'one pass'} | {r['case']} | {r['s']:.3f} | {r['gflop']:.1f} "
                f"| {100 * r['gflop'] / r['s'] / peak:.0f} % | {base['s'] / r['s']:.2f}x "
                f"| {r['max_rel_difference']:.1e} |")
  rows.append(f"\nXLA f32 GEMM peak in this run: {peak:.0f} GFLOP/s.")
  return "\n".join(rows)


def main(argv):
  del argv
  harness.start_worker()
  config = _CONFIG.value
  tiles = [int(t) for t in _TILES.value]
  if 0 not in tiles:
    tiles = [0] + tiles                  # the reference for the differences
  results = [{"impl": "gemm_peak", "gflops": harness.gemm_peak_gflops()}]
  print(json.dumps(results[-1]), flush=True)
  model = sampling.build_model(config)
  if not hasattr(model, "compose_tile_pixels"):
    raise SystemExit(f"{config.model.name} has no per-pixel compose (CREPS only)")
  res = config.model.resolution
  variables = sampling.init_variables(model)
  z = jax.random.normal(jax.random.PRNGKey(1), (_BATCH.value, model.z_dim), jnp.float32)
  ws = sampling.map_latents(model, variables, z)
  coords = model.default_coords(res)
  lines = jax.jit(lambda v, ws: model.apply(v, ws, coords, coords, method="line_features"))(
      variables, ws)
  args = (variables["params"],) + tuple(lines)
  flops = {name: cost.xla_flops(jax.jit(fn).lower(*args))
           for name, fn in _jobs(cost.one_pass(model), variables, ws).items()}
  reference = {}
  for tile in tiles:
    for name, fn in _jobs(model.clone(compose_tile_pixels=tile), variables, ws).items():
      t = time.perf_counter()
      compiled = xla_cpu.jit(fn).lower(*args).compile()
      compile_s = time.perf_counter() - t
      seconds, out = harness.best_time(compiled, *args, reps=_REPS.value)
      reference.setdefault(name, out)
      results.append({"impl": "gen_synth", "case": name, "tile": tile, "res": res,
                      "batch": _BATCH.value, "s": seconds, "gflop": flops[name] / 1e9,
                      "compile_s": compile_s,
                      "max_rel_difference": _max_rel_difference(out, reference[name])})
      print(json.dumps(results[-1]), flush=True)
  results.append({"impl": "gemm_peak", "gflops": harness.gemm_peak_gflops()})
  print(json.dumps(results[-1]))
  print(table(results))


if __name__ == "__main__":
  app.run(main)
