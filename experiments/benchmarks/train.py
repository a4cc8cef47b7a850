r"""Training iteration speed: gen_synth against the official CREPS code, side by side.

  python experiments/benchmarks/train.py --config=configs/creps_ffhq.py:res=128 \
      --batch_size=4 --official_repo=PATH/TO/CREPS --official_python=PATH/TO/torch/python

Each case runs in its own process, in this order: the f32 GEMM peak (XLA),
gen_synth, gen_synth with glibc's default malloc (--compare_host_memory;
gen_synth/host_memory.py), gen_synth with jaxlib's default XLA:CPU kernels and D's
conv_impl='gemm', the best under them (--xla_default_kernels; gen_synth/xla_cpu.py), the official code (when
--official_repo is given), the GEMM peak again. Both implementations time every phase of the iteration on its own
(median of --reps after a first iteration that compiles / warms up):
Gmain, Greg (path length), Dmain, Dreg (R1) and the EMA, and an iteration is

  Gmain + Dmain + EMA + Greg / pl_interval + Dreg / r1_interval

(every phase at its real frequency). FLOPs per phase are XLA's cost analysis
of gen_synth's phase (`gen_synth.cost.one_pass`: the model's arithmetic, without the
recomputation of CREPS's tiled per-pixel half); the same counts are used for
the official code (the same model), so "% peak" = FLOPs / s / (XLA f32 GEMM
peak of this run).
Start-up is timed to the end of the first iteration (both implementations);
gen_synth's is also split into the time before the phases (imports, models,
the state's initialisation), their compiles, and their first runs, with the
minor page faults and kernel time of those first runs (the memory a process
touches for the first time).
Prints one JSON line per case and a markdown table; --out appends the JSON.
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

import harness

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config.")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Global batch size.")
_REPS = flags.DEFINE_integer("reps", 2, "Timed repetitions of each phase.")
_OFFICIAL = flags.DEFINE_string("official_repo", None, "A clone of VinAIResearch/CREPS.")
_OFFICIAL_PY = flags.DEFINE_string("official_python", sys.executable,
                                   "Python with torch for the official code.")
_XLA_DEFAULT = flags.DEFINE_bool("xla_default_kernels", False,
                                 "Also time gen_synth with jaxlib's default XLA:CPU kernels.")
_COMPARE_HOST_MEMORY = flags.DEFINE_bool(
    "compare_host_memory", False,
    "Also time gen_synth with glibc's default malloc (--host_memory=system).")
_COMPARE_HUGE_PAGES = flags.DEFINE_bool(
    "compare_huge_pages", False,
    "Also time gen_synth without transparent huge pages for its heap "
    "(GLIBC_TUNABLES=glibc.malloc.hugetlb=0; gen_synth/host_memory.py).")
_RESUMED = flags.DEFINE_bool(
    "startup_resumed", False,
    "Also time gen_synth's start-up twice more, sharing a fresh persistent compilation "
    "cache (gen_synth.compilation_cache): a first start that fills it, then a restart "
    "that loads it, as `gen_synth.main` after a preemption.")
_CACHE_DIR = flags.DEFINE_string("compilation_cache_dir", None,
                                 "Internal: the worker's compilation cache folder.")
_WORKER = flags.DEFINE_enum("worker", None, ["gemm", "gen_synth"], "Internal: run one case.")
_OUT = flags.DEFINE_string("out", None, "Append the JSON lines to this file.")

OFFICIAL_PHASE = {"g_main": "Gmain", "g_pl": "Greg", "d_main": "Dmain", "d_r1": "Dreg",
                  "finish": "ema"}


def gen_synth_worker(config):
  t_start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gen_synth import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from gen_synth import train_steps, xla_cpu  # pylint: disable=g-import-not-at-top
  if _CACHE_DIR.value:
    from gen_synth import compilation_cache  # pylint: disable=g-import-not-at-top
    compilation_cache.enable(_CACHE_DIR.value, "")
  mesh = sharding_lib.make_mesh()
  setup = harness.training_setup(config, mesh)
  state, steps, images, key = setup.state, setup.steps, setup.images, setup.key
  res, batch = config.model.resolution, config.train.batch_size
  compiled, flops, compile_s, first_run = {}, {}, {}, {}
  before_phases = time.perf_counter() - t_start
  for name in train_steps.PHASES:      # step 0 runs every phase
    t = time.perf_counter()
    compiled[name] = steps.phase(name).lower(state, images, key).compile()
    compile_s[name] = time.perf_counter() - t
    usage = harness.Usage()
    state, _ = compiled[name](state, images, key)
    jax.block_until_ready(state)      # as CompiledSteps on CPU: phases never overlap
    first_run[OFFICIAL_PHASE[name]] = usage.since()
  startup = time.perf_counter() - t_start
  parts = {"before_phases_s": before_phases, "first_runs": first_run}
  if _CACHE_DIR.value:          # a start-up case only: no timed repetitions
    return {"impl": "gen_synth_startup", "res": res, "batch": batch, "startup_s": startup,
            "compile_s": {OFFICIAL_PHASE[k]: v for k, v in compile_s.items()},
            "compilation_cache": _CACHE_DIR.value, **parts}
  times = {name: [] for name in train_steps.PHASES}
  for _ in range(_REPS.value):
    for name in train_steps.PHASES:
      t = time.perf_counter()
      state, metrics = compiled[name](state, images, key)
      jax.block_until_ready((state, metrics))
      times[name].append(time.perf_counter() - t)
  flops_of = harness.phase_flops(config, setup, mesh)
  for name in train_steps.PHASES:
    flops[name] = flops_of(name, state, images, key)
  return {"impl": "gen_synth", "res": res, "batch": batch,
          "conv_impl": config.discriminator.get("conv_impl", "auto"),
          "s": {OFFICIAL_PHASE[k]: float(np.median(v)) for k, v in times.items()},
          "s_all": {OFFICIAL_PHASE[k]: v for k, v in times.items()},
          "flops": {OFFICIAL_PHASE[k]: v for k, v in flops.items()},
          "compile_s": {OFFICIAL_PHASE[k]: v for k, v in compile_s.items()},
          "startup_s": startup, **parts, "xla_cpu_options": xla_cpu.compiler_options(),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
          "anon_huge_pages_mib": harness.anon_huge_pages_mib(),
          "peak_rss_mib": harness.peak_rss_mib()}


def iteration_s(s, train_config):
  return (s["Gmain"] + s["Dmain"] + s["ema"] + s["Greg"] / train_config.pl_interval
          + s["Dreg"] / train_config.r1_interval)


def startup_parts(result):
  """gen_synth's start-up in parts (a worker's before_phases_s, compile_s, first_runs)."""
  runs = result["first_runs"].values()
  return (f"gen_synth's start-up: {result['before_phases_s']:.0f} s before the phases "
          f"(imports, models, state), {sum(result['compile_s'].values()):.0f} s compiling them, "
          f"{sum(r['s'] for r in runs):.0f} s running each the first time, with "
          f"{sum(r['minor_faults'] for r in runs):,} minor page faults and "
          f"{sum(r['system_s'] for r in runs):.1f} s of kernel time")


def table(results, train_config):
  peak = harness.mean_gemm_peak(results)
  ours = next(r for r in results if r["impl"] == "gen_synth" and not r.get("xla_default_kernels")
              and r.get("host_memory") != "system" and r.get("huge_pages") is not False)
  small_pages = next((r for r in results if r.get("huge_pages") is False), None)
  xla_default = next((r for r in results if r.get("xla_default_kernels")), None)
  system_malloc = next((r for r in results if r.get("host_memory") == "system"), None)
  theirs = next((r for r in results if r["impl"] == "official"), None)
  flops = dict(ours["flops"])
  rows = ["| phase | GFLOP | official s | gen_synth s | speed-up | official % peak "
          "| gen_synth % peak |", "|---|---|---|---|---|---|---|"]
  pct = lambda f, s: f"{100 * f / s / (peak * 1e9):.0f} %"
  for phase in ["Gmain", "Greg", "Dmain", "Dreg", "ema"]:
    o = theirs["s"][phase] if theirs else None
    g = ours["s"][phase]
    rows.append(f"| {phase} | {flops[phase] / 1e9:.0f} | {o if o is None else round(o, 2)} "
                f"| {g:.2f} | {'-' if o is None else f'{o / g:.2f}x'} "
                f"| {'-' if o is None else pct(flops[phase], o)} | {pct(flops[phase], g)} |")
  it_flops = iteration_s(flops, train_config)
  g_it = iteration_s(ours["s"], train_config)
  o_it = iteration_s(theirs["s"], train_config) if theirs else None
  rows.append(f"| **iteration** | {it_flops / 1e9:.0f} | {'-' if o_it is None else f'{o_it:.2f}'} "
              f"| {g_it:.2f} | {'-' if o_it is None else f'{o_it / g_it:.2f}x'} "
              f"| {'-' if o_it is None else pct(it_flops, o_it)} | {pct(it_flops, g_it)} |")
  rows.append(f"\nXLA f32 GEMM peak in this run: {peak:.0f} GFLOP/s. Start-up (to the end of "
              f"the first iteration): gen_synth {ours['startup_s']:.0f} s"
              + (f", official {theirs['startup_s']:.0f} s" if theirs else "")
              + (f". {startup_parts(ours)}" if "first_runs" in ours else "")
              + f". Peak RSS: gen_synth {ours['peak_rss_mib']:.0f} MiB"
              + (f", official {theirs['peak_rss_mib']:.0f} MiB" if theirs else "") + ".")
  if system_malloc:
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in system_malloc["s"].items())
    s_it = iteration_s(system_malloc["s"], train_config)
    rows.append(f"gen_synth with glibc's default malloc (--host_memory=system): iteration "
                f"{s_it:.2f} s, {pct(it_flops, s_it)} of peak ({phases}); peak RSS "
                f"{system_malloc['peak_rss_mib']:.0f} MiB. Keeping freed memory: "
                f"{s_it / g_it:.2f}x.")
  if small_pages:
    s_it = iteration_s(small_pages["s"], train_config)
    rows.append(f"gen_synth without huge pages for its heap (GLIBC_TUNABLES="
                f"glibc.malloc.hugetlb=0): iteration {s_it:.2f} s, {pct(it_flops, s_it)} of peak, "
                f"against {g_it:.2f} s; phases compiled in "
                f"{sum(small_pages['compile_s'].values()):.0f} s against "
                f"{sum(ours['compile_s'].values()):.0f} s; start-up "
                f"{small_pages['startup_s']:.0f} s against {ours['startup_s']:.0f} s.")
  startups = [r for r in results if r["impl"] == "gen_synth_startup"]
  if len(startups) == 2:
    rows.append(f"gen_synth start-up with a persistent compilation cache: "
                f"{startups[0]['startup_s']:.0f} s filling it (compiles "
                f"{sum(startups[0]['compile_s'].values()):.0f} s), {startups[1]['startup_s']:.0f} s "
                f"loading it, as a restarted run (compiles "
                f"{sum(startups[1]['compile_s'].values()):.0f} s).")
  if xla_default:
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in xla_default["s"].items())
    rows.append(f"gen_synth with jaxlib's default XLA:CPU kernels: iteration "
                f"{iteration_s(xla_default['s'], train_config):.2f} s ({phases}).")
  return "\n".join(rows)


def main(argv):
  del argv
  config = _CONFIG.value
  config.train.batch_size = _BATCH.value
  config.train.augment = "none"      # the official worker runs --aug=noaug
  if _WORKER.value:
    kept = harness.start_worker()
    result = ({"impl": "gemm_peak", "gflops": harness.gemm_peak_gflops()}
              if _WORKER.value == "gemm" else gen_synth_worker(config))
    result["host_memory_kept"] = kept
    print(json.dumps(result))
    return
  me = [sys.executable, os.path.abspath(__file__)] + [
      a for a in sys.argv[1:]
      if not a.startswith(("--official", "--out", "--xla_default", "--compare_host_memory",
                           "--compare_huge_pages", "--startup_resumed"))]
  runs = harness.Collector(_OUT.value)
  run = runs.run
  run(me + ["--worker=gemm"])
  run(me + ["--worker=gen_synth"])
  if _COMPARE_HOST_MEMORY.value:
    run(me + ["--worker=gen_synth", "--host_memory=system"], host_memory="system")
  if _COMPARE_HUGE_PAGES.value:
    run(me + ["--worker=gen_synth"], env={"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
        huge_pages=False)
  if _XLA_DEFAULT.value:
    # Under YNNPACK's kernels the shifted-GEMM weight gradient is D's best ('gemm').
    run(me + ["--worker=gen_synth", "--config.discriminator.conv_impl=gemm"],
        env=harness.XLA_DEFAULT_KERNELS, xla_default_kernels=True)
  if _RESUMED.value:
    with tempfile.TemporaryDirectory() as cache:
      for _ in range(2):
        run(me + ["--worker=gen_synth", f"--compilation_cache_dir={cache}"])
  if _OFFICIAL.value:
    t = config.train
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_train_worker.py")
    run([_OFFICIAL_PY.value, worker, f"--official_repo={_OFFICIAL.value}",
         f"--res={config.model.resolution}", f"--batch={_BATCH.value}",
         f"--reps={_REPS.value}", f"--r1_gamma={t.r1_gamma}", f"--pl_weight={t.pl_weight}",
         f"--style_mixing_prob={t.style_mixing_prob}"])
  run(me + ["--worker=gemm"])
  print(table(runs.results, config.train))


if __name__ == "__main__":
  app.run(main)
