r"""Generation speed and memory: gen_synth against the official code, side by side.

  python experiments/benchmarks/generation.py --models=creps,pixelfolder --res=256 \
      --batches=1,4 --official_creps=PATH/TO/CREPS --official_pixelfolder=PATH/TO/PixelFolder \
      --official_python=PATH/TO/torch/python [--xla_default_kernels] [--compare_host_memory] \
      [--dtypes=float32,bfloat16]

Each case runs in its own process, in this order: the GEMM peak (XLA; per --dtypes);
per model and batch: gen_synth (each --dtypes entry, and with glibc's default
malloc after each where --compare_host_memory; gen_synth/host_memory.py), gen_synth with jaxlib's
default XLA:CPU kernels (--xla_default_kernels; gen_synth/xla_cpu.py), the
official code (when its repository is given); the GEMM peak again.

gen_synth: the randomly initialised generator of `configs/<model>_ffhq.py:res=R`,
`model.apply(variables, z, height=R, width=R)` jitted, no noise.
Official: its generator built as its train.py builds it, fp32, `no_grad`
(`official_generation_worker.py`). Both report the median seconds per image
of --reps timed calls after one warm-up call, and the peak RSS of their
process. FLOPs per image are XLA's cost analysis of gen_synth's generator
(the same model; `gen_synth.cost.one_pass`), so "% peak" = FLOPs / s / (GEMM peak
of this run, of the row's dtype: a bfloat16 row against XLA's bfloat16 GEMM with
float32 accumulation, the official code's float32 against the float32 peak).
Prints one JSON line per case and a markdown table; --out appends the JSON.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

import harness

_MODELS = flags.DEFINE_list("models", ["creps", "pixelfolder"], "creps | pixelfolder | cips")
_RES = flags.DEFINE_integer("res", 256, "Output resolution (the model's training resolution).")
_BATCHES = flags.DEFINE_list("batches", ["1", "4"], "Batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "gen_synth compute dtypes.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed calls per case (median reported).")
_XLA_DEFAULT = flags.DEFINE_bool("xla_default_kernels", False,
                                 "Also time gen_synth with jaxlib's default XLA:CPU kernels.")
_COMPARE_HOST_MEMORY = flags.DEFINE_bool(
    "compare_host_memory", False,
    "Also time gen_synth with glibc's default malloc (--host_memory=system).")
_OFFICIAL_CREPS = flags.DEFINE_string("official_creps", None, "A clone of VinAIResearch/CREPS.")
_OFFICIAL_PF = flags.DEFINE_string("official_pixelfolder", None, "A clone of BlingHe/PixelFolder.")
_OFFICIAL_PY = flags.DEFINE_string("official_python", sys.executable,
                                   "Python with torch for the official code.")
_OUT = flags.DEFINE_string("out", None, "Append the JSON lines to this file.")
_WORKER = flags.DEFINE_enum("worker", None, ["gemm", "gen_synth"], "Internal: run one case.")
_MODEL = flags.DEFINE_string("model", "creps", "Internal: the worker's model.")
_BATCH = flags.DEFINE_integer("batch", 1, "Internal: the worker's batch.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Internal: the worker's dtype.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Internal: the worker's config.")

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")


def gen_synth_worker(config, model_name, batch, dtype_name, reps):
  t_start = time.perf_counter()
  from gen_synth import xla_cpu  # pylint: disable=g-import-not-at-top
  timed = harness.time_generator(config, batch, dtype_name, reps)
  startup = timed.pop("ready_at") - t_start
  return {"impl": "gen_synth", "model": model_name, **timed, "startup_s": startup,
          "xla_cpu_options": xla_cpu.compiler_options(compute_dtype=dtype_name),
          "peak_rss_mib": harness.peak_rss_mib()}


def table(results):
  dtypes = sorted({r["dtype"] for r in results if r["impl"] == "gen_synth"} | {"float32"})
  peak = {d: harness.mean_gemm_peak(results, d) for d in dtypes}
  ours = [r for r in results if r["impl"] == "gen_synth" and not r.get("xla_default_kernels")
          and r.get("host_memory") != "system"]
  find = lambda impl, r, **kw: next(
      (o for o in results if o["impl"] == impl and o["model"] == r["model"]
       and o["batch"] == r["batch"] and all(o.get(k) == v for k, v in kw.items())), None)
  # Each against the GEMM peak of its own dtype (the official code runs in float32).
  pct = lambda r, s, dtype: (f"{100 * r['gflop_per_img'] / s / peak[dtype]:.0f} %"
                             if peak[dtype] else "-")
  num = lambda r, key, fmt: "-" if r is None else format(r[key], fmt)
  rows = ["| model | batch | dtype | official s/img | gen_synth s/img | speed-up "
          "| official % peak | gen_synth % peak | gen_synth, XLA's default kernels s/img "
          "| gen_synth, glibc's default malloc s/img "
          "| peak RSS official / gen_synth (MiB) |", "|---" * 11 + "|"]
  for r in ours:
    o = find("official", r)
    x = find("gen_synth", r, dtype=r["dtype"], xla_default_kernels=True)
    m = find("gen_synth", r, dtype=r["dtype"], host_memory="system")
    speedup = "-" if o is None else f"{o['s_per_img'] / r['s_per_img']:.2f}x"
    rows.append(
        f"| {r['model']}-{r['res']} | {r['batch']} | {r['dtype']} "
        f"| {num(o, 's_per_img', '.3f')} | {r['s_per_img']:.3f} | {speedup} "
        f"| {'-' if o is None else pct(r, o['s_per_img'], 'float32')} "
        f"| {pct(r, r['s_per_img'], r['dtype'])} "
        f"| {num(x, 's_per_img', '.3f')} | {num(m, 's_per_img', '.3f')} "
        f"| {num(o, 'peak_rss_mib', '.0f')} / {r['peak_rss_mib']:.0f} |")
  flops = {f"{r['model']}-{r['res']}": round(r["gflop_per_img"], 1) for r in ours}
  peaks = ", ".join(f"{d} {p:.0f}" for d, p in peak.items() if p)
  rows.append(f"\nXLA GEMM peak in this run (GFLOP/s; bfloat16: float32 accumulation): "
              f"{peaks}. GFLOP per image (XLA cost analysis): {flops}.")
  return "\n".join(rows)


def main(argv):
  del argv
  if _WORKER.value:
    kept = harness.start_worker()
    result = ({"impl": "gemm_peak", "gflops": harness.gemm_peak_gflops(),
               **{f"gflops_{d}": harness.gemm_peak_gflops(dtype=d)
                  for d in _DTYPES.value if d != "float32"}}
              if _WORKER.value == "gemm" else
              gen_synth_worker(_CONFIG.value, _MODEL.value, _BATCH.value, _DTYPE.value,
                               _REPS.value))
    print(json.dumps(dict(result, host_memory_kept=kept)))
    return
  me = [sys.executable, os.path.abspath(__file__), f"--res={_RES.value}", f"--reps={_REPS.value}",
        f"--host_memory={harness.HOST_MEMORY.value}", f"--dtypes={','.join(_DTYPES.value)}"]
  official_worker = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "official_generation_worker.py")
  official = {"creps": _OFFICIAL_CREPS.value, "pixelfolder": _OFFICIAL_PF.value,
              "cips": _OFFICIAL_PF.value}
  runs = harness.Collector(_OUT.value)
  runs.run(me + ["--worker=gemm"])
  for model_name in _MODELS.value:
    for batch in _BATCHES.value:
      case = [f"--model={model_name}", f"--batch={batch}",
              f"--config={os.path.join(_CONFIGS, model_name + '_ffhq.py')}:res={_RES.value}"]
      for dtype in _DTYPES.value:
        runs.run(me + ["--worker=gen_synth", f"--dtype={dtype}"] + case)
        if _COMPARE_HOST_MEMORY.value:
          runs.run(me + ["--worker=gen_synth", f"--dtype={dtype}", "--host_memory=system"] + case,
                   host_memory="system")
      if _XLA_DEFAULT.value:
        runs.run(me + ["--worker=gen_synth"] + case, env=harness.XLA_DEFAULT_KERNELS,
                 xla_default_kernels=True)
      if official[model_name]:
        runs.run([_OFFICIAL_PY.value, official_worker, f"--official_repo={official[model_name]}",
                  f"--model={model_name}", f"--res={_RES.value}", f"--batch={batch}",
                  f"--reps={_REPS.value}"])
  runs.run(me + ["--worker=gemm"])
  print(table(runs.results))


if __name__ == "__main__":
  app.run(main)
