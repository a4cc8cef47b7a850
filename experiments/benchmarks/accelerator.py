r"""Throughput on one accelerator: generation img/s and training s/kimg, with peak memory.

  python experiments/benchmarks/accelerator.py --out=/tmp/accelerator.jsonl

The measurements issue 12 asks of one GPU (or TPU chip), each case in its own
process, in this order:

  1. the device's GEMM peak, float32 (XLA's default precision: TF32 on NVIDIA
     GPUs) and bfloat16, on an 8192^2 matmul (2048^2 on CPU, bfloat16 with
     float32 accumulation);
  2. training, every --train model and --train_dtypes dtype: the first of
     --train_batches (per device, largest first) whose five phases compile and
     run (XLA's RESOURCE_EXHAUSTED moves to the next), then --train_steps
     steps of the real train step (`compiled_steps.CompiledSteps`: Greg every
     pl_interval, Dreg every r1_interval steps, the config's augmentation)
     from step 1 on, on one batch of random images (no data pipeline): s/kimg,
     img/s (and device-seconds per kimg, s/kimg x devices) and the peak device
     memory. The official CREPS trains AFHQ-512 at 12.29 s/kimg on 8 A100s
     (about 98 s/kimg per A100); issue 12's goal is 35 s/kimg or less for
     CREPS-512 on one H100;
  3. generation, every --generation model at every --gen_batches batch and
     --dtypes compute dtype: `model.apply(variables, z, height=R, width=R)`
     jitted, no noise, median s/img of --reps calls after one warm-up, img/s,
     the compile time, the peak device memory of the process and the % of the
     GEMM peak of its dtype (FLOPs: XLA's cost analysis of `cost.one_pass`);
  4. the GEMM peak again.

A case spec is MODEL:ARG, `configs/MODEL_ffhq.py:ARG` (creps:res=512,
pixelfolder:res=256, creps:tiny). A case that fails, runs out of memory or
passes --case_timeout_s is recorded with its error and the run goes on; cases
not started within --budget_s of the start are recorded as skipped, so a
device lent for a few minutes returns what it measured. Workers use up to
95 % of the device's memory (XLA_PYTHON_CLIENT_MEM_FRACTION, unless set).
Prints one JSON line per case and markdown tables; --out appends the JSON.
Runs on CPU too (its tests do, with tiny models); peak memory there is the
process's peak RSS.
"""

import gc
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

import harness

_GENERATION = flags.DEFINE_list(
    "generation", ["creps:res=256", "creps:res=512", "creps:res=1024", "pixelfolder:res=256"],
    "Generation cases, MODEL:ARG (configs/MODEL_ffhq.py:ARG).")
_GEN_BATCHES = flags.DEFINE_list("gen_batches", ["16"], "Generation batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Generation compute dtypes.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed generation calls per case (median reported).")
_TRAIN = flags.DEFINE_list("train", ["creps:res=256", "creps:res=512"],
                           "Training cases, MODEL:ARG.")
_TRAIN_BATCHES = flags.DEFINE_list("train_batches", ["32", "16", "8"],
                                   "Per-device training batches to try, largest first.")
_TRAIN_DTYPES = flags.DEFINE_list("train_dtypes", ["float32"], "Training compute dtypes.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 16,
                                    "Timed training steps (16: one full Dreg period).")
_CASE_TIMEOUT = flags.DEFINE_integer("case_timeout_s", 600, "Time limit of one case.")
_BUDGET = flags.DEFINE_integer("budget_s", 3600,
                               "Start no case after this many seconds from the start.")
_OUT = flags.DEFINE_string("out", None, "Append the JSON lines to this file.")
_WORKER = flags.DEFINE_enum("worker", None, ["gemm", "generate", "train"],
                            "Internal: run one case.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Internal: the worker's compute dtype.")
_BATCHES = flags.DEFINE_list("batches", ["1"], "Internal: the worker's batch(es).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Internal: the worker's config.")

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


def config_path(spec: str) -> str:
  """'creps:res=512' -> 'PATH/configs/creps_ffhq.py:res=512'."""
  model, _, arg = spec.partition(":")
  path = os.path.join(_CONFIGS, f"{model}_ffhq.py")
  return f"{path}:{arg}" if arg else path


def is_out_of_memory(error: BaseException) -> bool:
  return any(s in str(error) for s in OUT_OF_MEMORY)


def first_that_fits(batches, attempt):
  """(batch, attempt(batch), {batch: error}) for the first batch whose attempt does
  not run out of memory; (None, None, errors) if none fits. Other errors propagate."""
  errors = {}
  for batch in batches:
    try:
      return batch, attempt(batch), errors
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      errors[batch] = str(e).splitlines()[0][:300]
      gc.collect()      # the failed attempt's arrays, before the next one
  return None, None, errors


# --- workers -----------------------------------------------------------------

def _device_facts():
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  return {"backend": jax.default_backend(), "device_kind": device.device_kind,
          "device_count": jax.device_count()}


def peak_memory_mib() -> dict:
  """{'peak_device_mib'} from the device's allocator, or {'peak_rss_mib'} on CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"peak_device_mib": stats["peak_bytes_in_use"] / 2 ** 20,
            "device_memory_mib": stats.get("bytes_limit", 0) / 2 ** 20}
  return {"peak_rss_mib": harness.peak_rss_mib()}


def gemm_worker():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "cpu":
    return {"impl": "gemm_peak", "gflops": harness.gemm_peak_gflops(),
            "gflops_bfloat16": harness.gemm_peak_gflops(dtype="bfloat16"), **_device_facts()}
  n, out = 8192, {}
  for dtype in (jnp.float32, jnp.bfloat16):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    best, _ = harness.best_time(jax.jit(lambda a: a @ a), a, reps=10)
    out[jnp.dtype(dtype).name] = 2 * n ** 3 / best / 1e9
  return {"impl": "gemm_peak", "gflops": out["float32"], "gflops_bfloat16": out["bfloat16"],
          **_device_facts()}


def generate_worker(config, batch, dtype_name, reps):
  timed = harness.time_generator(config, batch, dtype_name, reps)
  del timed["ready_at"]
  return {"impl": "generate", "model": config.model.name, **timed,
          "img_per_s": 1 / timed["s_per_img"], **peak_memory_mib(), **_device_facts()}


def train_worker(config, batches, dtype_name, num_steps):
  import jax  # pylint: disable=g-import-not-at-top
  from gen_synth import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  config.train.compute_dtype = dtype_name
  res = config.model.resolution
  mesh = sharding_lib.make_mesh()

  def attempt(batch):
    """Compiles and runs step 0 (every phase), then times steps 1..num_steps."""
    config.train.batch_size = batch * jax.device_count()
    setup = harness.training_setup(config, mesh)
    state, steps, images, key = setup.state, setup.steps, setup.images, setup.key
    t = time.perf_counter()
    state, _ = steps(0, state, images, key)
    jax.block_until_ready(state)
    first_step_s = time.perf_counter() - t
    t = time.perf_counter()
    for step in range(1, num_steps + 1):
      state, metrics = steps(step, state, images, key)
    jax.block_until_ready((state, metrics))
    return first_step_s, time.perf_counter() - t

  batch, timing, errors = first_that_fits(batches, attempt)
  base = {"impl": "train", "model": config.model.name, "res": res, "dtype": dtype_name,
          "tried_batches": batches, "out_of_memory": errors, **_device_facts()}
  if batch is None:
    return dict(base, batch=None, **peak_memory_mib())
  first_step_s, wall = timing
  images = num_steps * batch * jax.device_count()
  return dict(base, batch=batch, steps=num_steps, s_per_step=wall / num_steps,
              s_per_kimg=1000 * wall / images, img_per_s=images / wall,
              device_s_per_kimg=1000 * wall / images * jax.device_count(),
              first_step_s=first_step_s, augment=config.train.augment,
              pl_interval=config.train.pl_interval, r1_interval=config.train.r1_interval,
              **peak_memory_mib())


# --- the driver --------------------------------------------------------------

def tables(results) -> str:
  """Markdown tables of a run's generation and training cases."""
  peaks = [r for r in results if r["impl"] == "gemm_peak"]
  peak = {"float32": harness.mean_gemm_peak(results),
          "bfloat16": (sum(r["gflops_bfloat16"] or 0 for r in peaks) / max(len(peaks), 1))}
  device = next((f"{r['device_kind']} ({r['backend']})" for r in results if "device_kind" in r),
                "unknown device")
  mem = lambda r: (f"{r['peak_device_mib']:.0f}" if "peak_device_mib" in r
                   else f"{r['peak_rss_mib']:.0f} (RSS)" if "peak_rss_mib" in r else "-")
  rows = [f"Device: {device}. GEMM peak in this run: float32 {peak['float32']:.0f} GFLOP/s"
          + (f", bfloat16 {peak['bfloat16']:.0f} GFLOP/s" if peak["bfloat16"] else "") + ".",
          "", "| model | res | batch | dtype | s/img | img/s | % of GEMM peak "
          "| peak memory (MiB) | compile s |", "|---" * 9 + "|"]
  for r in results:
    if r["impl"] == "generate":
      p = peak.get(r["dtype"]) or peak["float32"]
      rows.append(f"| {r['model']} | {r['res']} | {r['batch']} | {r['dtype']} "
                  f"| {r['s_per_img']:.4f} | {r['img_per_s']:.1f} "
                  f"| {100 * r['gflop_per_img'] * r['img_per_s'] / p:.0f} % "
                  f"| {mem(r)} | {r['compile_s']:.0f} |")
  rows += ["", "| model | res | dtype | batch per device | s/kimg | img/s | s/step "
           "| peak memory (MiB) | out of memory at |", "|---" * 9 + "|"]
  for r in results:
    if r["impl"] == "train":
      oom = ", ".join(str(b) for b in r["out_of_memory"]) or "-"
      if r["batch"] is None:
        rows.append(f"| {r['model']} | {r['res']} | {r['dtype']} | none fits | - | - | - "
                    f"| {mem(r)} | {oom} |")
      else:
        rows.append(f"| {r['model']} | {r['res']} | {r['dtype']} | {r['batch']} "
                    f"| {r['s_per_kimg']:.1f} | {r['img_per_s']:.1f} | {r['s_per_step']:.3f} "
                    f"| {mem(r)} | {oom} |")
  failed = [r for r in results if r["impl"] in ("failed", "skipped")]
  if failed:
    rows += [""] + [f"{r['impl']}: {r['case']} ({r.get('error', 'over --budget_s')})"
                    for r in failed]
  return "\n".join(rows)


class Run:
  """Cases one after the other, each with a time limit, within a total budget."""

  def __init__(self, out_path, budget_s, case_timeout_s):
    self.runs = harness.Collector(out_path)
    self.deadline = time.monotonic() + budget_s
    self.case_timeout_s = case_timeout_s

  def case(self, cmd, name):
    if time.monotonic() > self.deadline:
      return self.runs.add({"impl": "skipped", "case": name})
    env = {} if "XLA_PYTHON_CLIENT_MEM_FRACTION" in os.environ else {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": ".95"}
    try:
      return self.runs.run(cmd, env=env, timeout=self.case_timeout_s)
    except subprocess.TimeoutExpired:
      return self.runs.add({"impl": "failed", "case": name,
                            "error": f"over --case_timeout_s={self.case_timeout_s}"})
    except RuntimeError as e:
      lines = [l for l in str(e).splitlines() if l.strip()]
      return self.runs.add({"impl": "failed", "case": name, "error": " / ".join(lines[-2:])})


def main(argv):
  del argv
  if _WORKER.value:
    harness.start_worker()
    if _WORKER.value == "gemm":
      result = gemm_worker()
    elif _WORKER.value == "generate":
      result = generate_worker(_CONFIG.value, int(_BATCHES.value[0]), _DTYPE.value, _REPS.value)
    else:
      result = train_worker(_CONFIG.value, [int(b) for b in _BATCHES.value], _DTYPE.value,
                            _TRAIN_STEPS.value)
    print(json.dumps(result))
    return
  me = [sys.executable, os.path.abspath(__file__), f"--reps={_REPS.value}",
        f"--train_steps={_TRAIN_STEPS.value}", f"--host_memory={harness.HOST_MEMORY.value}"]
  run = Run(_OUT.value, _BUDGET.value, _CASE_TIMEOUT.value)
  run.case(me + ["--worker=gemm"], "gemm")
  for spec in _TRAIN.value:          # first: the goal is a training rate
    for dtype in _TRAIN_DTYPES.value:
      run.case(me + ["--worker=train", f"--config={config_path(spec)}",
                     f"--batches={','.join(_TRAIN_BATCHES.value)}", f"--dtype={dtype}"],
               f"train {spec} {dtype}")
  for spec in _GENERATION.value:
    for batch in _GEN_BATCHES.value:
      for dtype in _DTYPES.value:
        run.case(me + ["--worker=generate", f"--config={config_path(spec)}",
                       f"--batches={batch}", f"--dtype={dtype}"],
                 f"generate {spec} batch {batch} {dtype}")
  run.case(me + ["--worker=gemm"], "gemm")
  print(tables(run.runs.results))


if __name__ == "__main__":
  app.run(main)
