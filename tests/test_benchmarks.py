"""experiments/benchmarks: the generation worker and the table arithmetic (no timing asserted)."""

import json
import os
import pathlib
import subprocess
import sys

from gen_synth import host_memory

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "experiments" / "benchmarks"


def _worker(extra_env=None, *flags):
  env = dict(os.environ, **(extra_env or {}))
  out = subprocess.run(
      [sys.executable, str(BENCH / "generation.py"), "--worker=gen_synth", "--model=creps",
       "--batch=2", "--reps=1", f"--config={REPO_ROOT / 'configs' / 'creps_ffhq.py'}:tiny",
       *flags],
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
                                     "LIBRARY_FUSION_TYPE_REDUCE",
                                     "xla_backend_optimization_level": 1}
  # --host_memory=auto (the default) keeps freed memory on this CPU, =system never.
  assert ours["host_memory_kept"] == host_memory.is_glibc()
  default = _worker(harness.XLA_DEFAULT_KERNELS, "--host_memory=system")
  # jaxlib's default kernels; gen_synth's optimisation level stays.
  assert default["xla_cpu_options"] == {"xla_backend_optimization_level": 1}
  assert default["host_memory_kept"] is False
  assert abs(default["gflop_per_img"] - ours["gflop_per_img"]) <= 0.05 * ours["gflop_per_img"]


def test_generation_table_ratios_and_fractions_of_peak():
  results = [
      {"impl": "gemm_peak", "gflops": 100.0}, {"impl": "gemm_peak", "gflops": 300.0},
      {"impl": "gen_synth", "model": "creps", "res": 256, "batch": 1, "dtype": "float32",
       "s_per_img": 0.5, "gflop_per_img": 100.0, "peak_rss_mib": 900.0},
      {"impl": "gen_synth", "model": "creps", "res": 256, "batch": 1, "dtype": "float32",
       "s_per_img": 0.8, "gflop_per_img": 100.0, "peak_rss_mib": 950.0,
       "xla_default_kernels": True},
      {"impl": "gen_synth", "model": "creps", "res": 256, "batch": 1, "dtype": "float32",
       "s_per_img": 0.6, "gflop_per_img": 100.0, "peak_rss_mib": 800.0,
       "host_memory": "system"},
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
                   "0.800", "0.600", "700 / 900"], cells


def test_augment_worker_and_table():
  """experiments/benchmarks/augment.py: the gen_synth worker runs its three jobs and the
  table divides the official time by gen_synth's per job."""
  out = subprocess.run(
      [sys.executable, str(BENCH / "augment.py"), "--worker=gen_synth", "--res=16", "--batch=2",
       "--reps=1"], capture_output=True, text=True, check=True, timeout=600)
  ours = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
  assert ours["impl"] == "gen_synth" and ours["res"] == 16 and ours["batch"] == 2
  assert set(ours["s"]) == {"fwd", "vjp", "r1"} and min(ours["s"].values()) > 0
  results = [dict(ours, s={"fwd": 0.5, "vjp": 1.0, "r1": 2.0}),
             {"impl": "official", "res": 16, "batch": 2, "s": {"fwd": 1.0, "vjp": 1.0, "r1": 8.0}}]
  code = ("import json, sys; sys.argv = ['augment.py']; import augment; "
          f"print(augment.table(json.loads({json.dumps(json.dumps(results))})))")
  table = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True,
                         text=True, check=True).stdout
  rows = [[c.strip() for c in l.strip("|").split("|")] for l in table.splitlines()
          if l.startswith("| 16")]
  assert rows == [["16", "2", "fwd", "1.0000", "0.5000", "2.00x"],
                  ["16", "2", "vjp", "1.0000", "1.0000", "1.00x"],
                  ["16", "2", "r1", "8.0000", "2.0000", "4.00x"]], rows


def test_compose_benchmark_cases_agree_with_one_pass():
  """experiments/benchmarks/compose.py: every tile size times both jobs, with the
  one-pass FLOPs, and gives the one-pass image and gradients."""
  out = subprocess.run(
      [sys.executable, str(BENCH / "compose.py"), "--batch=2", "--tiles=64", "--reps=1",
       f"--config={REPO_ROOT / 'configs' / 'creps_ffhq.py'}:tiny"],
      capture_output=True, text=True, check=True, timeout=600)
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  cases = [l for l in lines if l.get("case")]
  assert [(c["tile"], c["case"]) for c in cases] == [
      (0, "forward"), (0, "forward_backward"), (64, "forward"), (64, "forward_backward")]
  for c in cases:
    assert c["s"] > 0 and c["max_rel_difference"] < 1e-4, c
  fwd, bwd = cases[0]["gflop"], cases[1]["gflop"]
  assert cases[2]["gflop"] == fwd and cases[3]["gflop"] == bwd and bwd > 2 * fwd > 0
  assert len([l for l in out.stdout.splitlines() if l.startswith("| 64 |")]) == 2


def test_train_table_iteration_huge_pages_and_resumed_startup():
  phases = {"Gmain": 4.0, "Greg": 8.0, "Dmain": 5.0, "Dreg": 16.0, "ema": 0.01}
  flops = {"Gmain": 400e9, "Greg": 800e9, "Dmain": 500e9, "Dreg": 1600e9, "ema": 0.0}
  results = [
      {"impl": "gemm_peak", "gflops": 100.0},
      {"impl": "gen_synth", "s": phases, "flops": flops, "startup_s": 90.0,
       "peak_rss_mib": 4000.0, "before_phases_s": 10.2, "compile_s": {"Gmain": 30.0, "Greg": 19.6},
       "first_runs": {"Gmain": {"s": 20.0, "minor_faults": 900000, "system_s": 8.25},
                      "Greg": {"s": 10.4, "minor_faults": 1234, "system_s": 0.5}}},
      {"impl": "gen_synth", "s": {k: 1.5 * v for k, v in phases.items()}, "flops": flops,
       "startup_s": 101.0, "peak_rss_mib": 4000.0, "compile_s": {"Gmain": 40.0, "Greg": 21.0},
       "huge_pages": False},
      {"impl": "gen_synth_startup", "startup_s": 120.4, "compile_s": {"Gmain": 30.0, "Greg": 20.0}},
      {"impl": "gen_synth_startup", "startup_s": 61.6, "compile_s": {"Gmain": 4.0, "Greg": 5.0}},
      {"impl": "official", "s": {k: 2 * v for k, v in phases.items()}, "startup_s": 40.0,
       "peak_rss_mib": 6000.0}]
  code = ("import json, sys; sys.argv = ['train.py']; import train; "
          "from gen_synth import config_utils; "
          "t = config_utils.ml_collections.ConfigDict(dict(pl_interval=4, r1_interval=16)); "
          f"print(train.table(json.loads({json.dumps(json.dumps(results))}), t))")
  out = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True,
                       check=True).stdout
  row = next(l for l in out.splitlines() if l.startswith("| **iteration**"))
  # iteration = 4 + 5 + 0.01 + 8/4 + 16/16 = 12.01 s for 400+500+200+100 = 1200 GFLOP.
  assert [c.strip() for c in row.strip("|").split("|")] == [
      "**iteration**", "1200", "24.02", "12.01", "2.00x", "50 %", "100 %"]
  assert ("gen_synth's start-up: 10 s before the phases (imports, models, state), 50 s "
          "compiling them, 30 s running each the first time, with 901,234 minor page faults "
          "and 8.8 s of kernel time. Peak RSS") in out
  # The case without huge pages is reported beside the main one, never as it.
  assert ("without huge pages for its heap (GLIBC_TUNABLES=glibc.malloc.hugetlb=0): iteration "
          "18.02 s, 67 % of peak, against 12.01 s; phases compiled in 61 s against 50 s; "
          "start-up 101 s against 90 s.") in out
  assert ("start-up with a persistent compilation cache: 120 s filling it (compiles 50 s), "
          "62 s loading it, as a restarted run (compiles 9 s)") in out


def test_usage_counts_the_memory_a_process_touches_first():
  # 64 MiB written once: at least one page of it is new to the process, so the
  # minor faults cannot stay 0 (even where transparent huge pages map 2 MiB at once).
  code = ("import json, numpy as np, harness; u = harness.Usage(); "
          "a = np.ones(1 << 24, np.float32); r = u.since(); r['sum'] = float(a.sum()); "
          "print(json.dumps(r))")
  out = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True,
                       check=True).stdout
  r = json.loads(out.splitlines()[-1])
  assert r["sum"] == 1 << 24
  assert r["minor_faults"] > 0
  assert r["s"] > 0 and r["system_s"] >= 0 and r["user_s"] >= 0


def test_profile_phases_reports_kinds_and_flops():
  """experiments/benchmarks/profile_phases.py on the tiny config: a profile per
  case, its dots and convolutions found, and for Dmain (nothing recomputed) the
  FLOPs read from the HLO within 10 % of XLA's cost analysis of the phase.
  One CPU device, as a user runs it (conftest's 8 virtual devices removed)."""
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count"))
  out = subprocess.run(
      [sys.executable, str(BENCH / "profile_phases.py"), "--batch_size=2",
       "--phases=Gmain,Dmain", "--generation_batches=2", "--top=3",
       f"--config={REPO_ROOT / 'configs' / 'creps_ffhq.py'}:tiny"],
      capture_output=True, text=True, check=True, timeout=900,
      env=dict(os.environ, XLA_FLAGS=flags))
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  cases = {l["case"].split(",")[0]: l for l in lines if l.get("impl") == "profile"}
  assert sorted(cases) == ["Dmain", "Gmain", "generation"], sorted(cases)
  for case in cases.values():
    assert case["wall_s"] > 0 and case["plain_s"] > 0 and case["model_gflop"] > 0, case
    assert case["kinds"]["dot+convolution"]["gflop"] > 0 and case["top"], case
  d = cases["Dmain"]
  assert abs(d["executed_gflop"] - d["model_gflop"]) <= 0.1 * d["model_gflop"], d
  assert len([l for l in lines if l.get("impl") == "gemm_peak"]) == 2
  assert out.stdout.count("| dot+convolution |") == 3
