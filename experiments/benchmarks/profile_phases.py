r"""Where the training phases and generation spend their time, by kind of op.

  python experiments/benchmarks/profile_phases.py --config=configs/creps_ffhq.py:res=256 \
      --batch_size=4 --generation_batches=1,4

One process, gen_synth alone, on the CPU: the f32 GEMM peak (XLA), then each
training phase of `CompiledSteps` (state, random images, as train.py's
gen_synth case) compiled, run twice to warm up (the first run pays for the
memory it touches first), timed once more and run once under `jax.profiler`
(`gen_synth.op_profile`), then the generator of the same config at each
--generation_batches, the same way, and the GEMM peak again. For each it prints
a markdown table by kind of op:

  dot+convolution  XLA:CPU's dots and convolutions (Eigen), timed together
                   as the call's wall time outside every other op, with the
                   GFLOP they executed and their rate as a fraction of the peak
  elementwise, reduction, copy, gemm (YNNPACK fusions), other
                   timed exactly, one event per executed op

and the split of the timed (non-dot) ops' time by part of the model (G's line
features, G's per-pixel half, G's mapping, D, the rest: the optimiser and
loss), then the --top ops that took longest. "executed GFLOP" counts what ran, the
recomputation of CREPS's tiled per-pixel half included; "model GFLOP" is
`gen_synth.cost.one_pass` (what train.py's "% peak" divides by). Prints one
JSON line per case; --out appends them.
"""

import collections
import time

from absl import app
from absl import flags
from ml_collections import config_flags

import harness

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config.")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Global batch size of the training phases.")
_PHASES = flags.DEFINE_list("phases", ["Gmain", "Greg", "Dmain", "Dreg"],
                            "Training phases to profile (Gmain, Greg, Dmain, Dreg); none: ''.")
_GEN_BATCHES = flags.DEFINE_list("generation_batches", [], "Generator batches to profile.")
_TOP = flags.DEFINE_integer("top", 8, "Timed ops listed per case.")
_OUT = flags.DEFINE_string("out", None, "Append the JSON lines to this file.")

PHASE_NAMES = {"g_main": "Gmain", "g_pl": "Greg", "d_main": "Dmain", "d_r1": "Dreg",
               "finish": "ema"}
# Parts of the model, by the JAX op name (Flax module path) an op came from.
PARTS = (("G per-pixel half", ("compose", "_to_image", "refine")),
         ("G line features", ("line_features",)),
         ("G mapping", ("mapping",)),
         ("D", ("Discriminator",)))


def part_of(source: str) -> str:
  for part, keys in PARTS:
    if any(k in source for k in keys):
      return part
  return "rest (loss, optimiser)"


def summarise(name, prof, peak, model_flops, plain_s):
  """A case's JSON record and its printed report."""
  from gen_synth import op_profile  # pylint: disable=g-import-not-at-top
  kinds = prof.by_kind()
  parts = collections.defaultdict(float)
  for t in prof.ops:
    if t.seconds:
      parts[part_of(t.op.source)] += t.seconds
  executed = sum(r["gflop"] for r in kinds.values())
  record = {"case": name, "wall_s": prof.wall_s, "plain_s": plain_s, "peak_gflops": peak,
            "model_gflop": model_flops / 1e9, "executed_gflop": executed,
            "kinds": kinds, "timed_by_part_s": dict(parts),
            "top": [{"op": t.op.name, "kind": t.op.kind, "shape": t.op.shape, "count": t.count,
                     "s": t.seconds, "source": t.op.source} for t in prof.top(_TOP.value)]}
  lines = [f"\n### {name}: {plain_s:.3f} s unprofiled, {prof.wall_s:.3f} s profiled; "
           f"model {model_flops / 1e9:.1f} GFLOP ({100 * model_flops / 1e9 / plain_s / peak:.0f} % "
           f"of peak unprofiled), executed {executed:.1f} GFLOP\n",
           op_profile.kind_table(prof, peak),
           "\nTimed ops (all but dots and convolutions) by part: "
           + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])),
           "\n| s | count | kind | op | shape | from |", "|---" * 6 + "|"]
  for t in prof.top(_TOP.value):
    lines.append(f"| {t.seconds:.3f} | {t.count} | {t.op.kind} | {t.op.name} | {t.op.shape} "
                 f"| {t.op.source[-80:]} |")
  return record, "\n".join(lines)


def main(argv):
  del argv
  harness.start_worker()
  import jax  # pylint: disable=g-import-not-at-top
  from gen_synth import op_profile, train_steps  # pylint: disable=g-import-not-at-top
  from gen_synth import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  config.train.batch_size = _BATCH.value
  config.train.augment = "none"      # as train.py: the official worker runs --aug=noaug
  runs = harness.Collector(_OUT.value)
  peaks = [harness.gemm_peak_gflops()]
  runs.add({"impl": "gemm_peak", "gflops": peaks[0]})
  reports = []

  def run_case(name, compiled, args, model_flops, carry):
    """Warm-up x2, one timed run, one profiled run; returns the outputs of the last."""
    for _ in range(2):
      args = carry(args, jax.block_until_ready(compiled(*args)))
    t = time.perf_counter()
    args = carry(args, jax.block_until_ready(compiled(*args)))
    plain = time.perf_counter() - t
    prof, out = op_profile.profile(compiled, *args)
    record, report = summarise(name, prof, peaks[0], model_flops, plain)
    runs.add(dict(record, impl="profile"))
    reports.append(report)
    return carry(args, out)

  wanted = [p for p in _PHASES.value if p]
  if wanted:
    mesh = sharding_lib.make_mesh()
    setup = harness.training_setup(config, mesh)
    state, images, key = setup.state, setup.images, setup.key
    flops_of = harness.phase_flops(config, setup, mesh)
    for phase in train_steps.PHASES:
      name = PHASE_NAMES[phase]
      compiled = setup.steps.phase(phase).lower(state, images, key).compile()
      if name not in wanted:
        state, _ = compiled(state, images, key)
        jax.block_until_ready(state)
        continue
      flops = flops_of(phase, state, images, key)
      (state, images, key) = run_case(
          f"{name}, res {config.model.resolution}, batch {_BATCH.value}", compiled,
          (state, images, key), flops, lambda args, out: (out[0],) + tuple(args[1:]))
    del state, setup
  for batch in map(int, _GEN_BATCHES.value):
    compiled, args, flops, _ = harness.compiled_generator(config, batch, "float32")
    run_case(f"generation, res {config.model.resolution}, batch {batch}", compiled, args, flops,
             lambda args, out: args)
  peaks.append(harness.gemm_peak_gflops())
  runs.add({"impl": "gemm_peak", "gflops": peaks[1]})
  print("\n".join(reports))
  print(f"\nXLA f32 GEMM peak: {peaks[0]:.0f} GFLOP/s before the cases, {peaks[1]:.0f} after "
        f"(the tables use the first).")


if __name__ == "__main__":
  app.run(main)
