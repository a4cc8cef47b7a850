"""experiments/benchmarks: the generation worker and the table arithmetic (no timing asserted)."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "experiments" / "benchmarks"


def _worker(extra_env=None):
  env = dict(os.environ, **(extra_env or {}))
  out = subprocess.run(
      [sys.executable, str(BENCH / "generation.py"), "--worker=gen_synth", "--model=creps",
       "--batch=2", "--reps=1", f"--config={REPO_ROOT / 'configs' / 'creps_ffhq.py'}:tiny"],
      capture_output=True, text=True, env=env, check=True, timeout=600)
  return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])


def test_generation_worker_reports_its_case_and_kernel_choice():
  sys.path.insert(0, str(BENCH))
  try:
    import harness  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(str(BENCH))
  ours = _worker()
  assert ours["impl"] == "gen_synth" and ours["model"] == "creps" and ours["batch"] == 2
  assert ours["res"] == 32 and ours["s_per_img"] > 0 and ours["gflop_per_img"] > 0
  assert ours["xla_cpu_options"] == {"xla_cpu_experimental_ynn_fusion_type":
                                     "LIBRARY_FUSION_TYPE_REDUCE"}
  default = _worker(harness.XLA_DEFAULT_KERNELS)
  assert default["xla_cpu_options"] is None
  assert abs(default["gflop_per_img"] - ours["gflop_per_img"]) <= 0.05 * ours["gflop_per_img"]


def test_generation_table_ratios_and_fractions_of_peak():
  results = [
      {"impl": "gemm_peak", "gflops": 100.0}, {"impl": "gemm_peak", "gflops": 300.0},
      {"impl": "gen_synth", "model": "creps", "res": 256, "batch": 1, "dtype": "float32",
       "s_per_img": 0.5, "gflop_per_img": 100.0, "peak_rss_mib": 900.0},
      {"impl": "gen_synth", "model": "creps", "res": 256, "batch": 1, "dtype": "float32",
       "s_per_img": 0.8, "gflop_per_img": 100.0, "peak_rss_mib": 950.0,
       "xla_default_kernels": True},
      {"impl": "official", "model": "creps", "res": 256, "batch": 1, "dtype": "float32",
       "s_per_img": 2.0, "peak_rss_mib": 700.0}]
  code = ("import json, sys; sys.argv = ['generation.py']; import generation; "
          f"print(generation.table(json.loads({json.dumps(json.dumps(results))})))")
  out = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True,
                       check=True).stdout
  row = next(l for l in out.splitlines() if l.startswith("| creps-256"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  # peak = mean(100, 300) = 200 GFLOP/s: 100 GFLOP in 0.5 s is 100 %, in 2 s 25 %.
  assert cells == ["creps-256", "1", "float32", "2.000", "0.500", "4.00x", "25 %", "100 %",
                   "0.800", "700 / 900"], cells
