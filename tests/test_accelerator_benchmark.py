"""experiments/benchmarks/accelerator.py: its cases on CPU, the batch search, the tables.

The script is for a GPU or TPU; here it runs tiny models on the CPU, which is
what its workers do wherever they run (no timing is asserted).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"
SCRIPT = BENCH / "accelerator.py"


def _env(devices, blocked_dir=None):
  """The environment of a run on `devices` CPU devices; with `blocked_dir`, one
  where TensorFlow, tfds and clu cannot be imported (as on an accelerator image
  that has JAX and Flax only)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, XLA_FLAGS=" ".join(flags + [
      f"--xla_force_host_platform_device_count={devices}"]))
  if blocked_dir is not None:
    for name in ("tensorflow", "tensorflow_datasets", "clu"):
      (blocked_dir / name).mkdir(parents=True)
      (blocked_dir / name / "__init__.py").write_text(
          f"raise ImportError('{name} is not installed here')\n")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(blocked_dir)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def _module_call(code):
  """Runs `code` with accelerator.py imported as `a` (its flags in a process of their own)."""
  out = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['accelerator.py']; "
                        "import accelerator as a\n" + code],
                       cwd=BENCH, capture_output=True, text=True, check=True, timeout=300)
  return out.stdout


def test_tiny_cases_on_cpu_measure_record_failures_and_tabulate(tmp_path):
  # Without TensorFlow, tfds or clu: the workers time the train step the loop
  # runs (gen_synth/compiled_steps.py) and the generator without the data stack.
  out_path = tmp_path / "accelerator.jsonl"
  out = subprocess.run(
      [sys.executable, str(SCRIPT), "--generation=creps:tiny,nosuchmodel:tiny",
       "--gen_batches=2", "--dtypes=float32", "--train=creps:tiny", "--train_batches=2",
       "--train_steps=2", "--reps=1", f"--out={out_path}"],
      capture_output=True, text=True, env=_env(2, tmp_path / "blocked"), check=True,
      timeout=1200).stdout
  lines = [json.loads(l) for l in out_path.read_text().splitlines()]
  assert [l["impl"] for l in lines] == ["gemm_peak", "train", "generate", "failed", "gemm_peak"]
  gemm, train, gen, failed, _ = lines
  assert gemm["backend"] == "cpu" and gemm["gflops"] > 0 and gemm["device_count"] == 2
  assert (gen["model"], gen["res"], gen["batch"], gen["dtype"]) == ("creps", 32, 2, "float32")
  assert gen["img_per_s"] == pytest.approx(1 / gen["s_per_img"])
  assert gen["gflop_per_img"] > 0 and gen["compile_s"] > 0 and gen["peak_rss_mib"] > 0
  assert "peak_device_mib" not in gen           # a CPU reports its process's peak RSS
  # A case that fails is recorded and the run goes on.
  assert failed["case"] == "generate nosuchmodel:tiny batch 2 float32" and failed["error"]
  # 2 images per device on 2 devices: 4 per step.
  assert (train["batch"], train["device_count"], train["steps"]) == (2, 2, 2)
  assert train["out_of_memory"] == {} and train["tried_batches"] == [2]
  assert train["s_per_kimg"] == pytest.approx(1000 * train["s_per_step"] / 4)
  assert train["device_s_per_kimg"] == pytest.approx(2 * train["s_per_kimg"])
  assert train["img_per_s"] == pytest.approx(1000 / train["s_per_kimg"])
  assert train["first_step_s"] > 0 and train["peak_rss_mib"] > 0
  assert any(l.startswith("| creps | 32 | 2 | float32 | ") for l in out.splitlines())
  assert any(l.startswith("| creps | 32 | float32 | 2 | ") for l in out.splitlines())
  assert "failed: generate nosuchmodel:tiny batch 2 float32 (" in out


def test_no_case_starts_after_the_budget(tmp_path):
  out = subprocess.run(
      [sys.executable, str(SCRIPT), "--budget_s=0", "--generation=creps:tiny",
       "--gen_batches=1,2", "--dtypes=float32", "--train=creps:tiny"],
      capture_output=True, text=True, env=_env(1), check=True, timeout=300).stdout
  results = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  assert [r["impl"] for r in results] == ["skipped"] * 5
  assert [r["case"] for r in results] == [
      "gemm", "train creps:tiny float32", "generate creps:tiny batch 1 float32",
      "generate creps:tiny batch 2 float32", "gemm"]
  assert "skipped: train creps:tiny float32 (over --budget_s)" in out


def test_the_first_batch_that_fits_moves_past_out_of_memory_only():
  out = _module_call(
      "def attempt(b):\n"
      "  if b > 8: raise RuntimeError(f'RESOURCE_EXHAUSTED: Out of memory allocating {b} GiB')\n"
      "  return 10 * b\n"
      "print(a.first_that_fits([32, 16, 8, 4], attempt))\n"
      "print(a.first_that_fits([32, 16], attempt))\n"
      "def broken(b): raise ValueError('not a memory error')\n"
      "try:\n"
      "  a.first_that_fits([4], broken)\n"
      "except ValueError as e:\n"
      "  print('raised', e)\n"
      "print(a.config_path('creps:res=512').endswith('configs/creps_ffhq.py:res=512'))\n")
  lines = out.splitlines()
  assert lines[0] == ("(8, 80, {32: 'RESOURCE_EXHAUSTED: Out of memory allocating 32 GiB', "
                      "16: 'RESOURCE_EXHAUSTED: Out of memory allocating 16 GiB'})")
  assert lines[1].startswith("(None, None, {32: ")
  assert lines[2] == "raised not a memory error"
  assert lines[3] == "True"


def test_tables_take_each_dtype_against_its_own_gemm_peak():
  results = [
      {"impl": "gemm_peak", "gflops": 400e3, "gflops_bfloat16": 800e3, "backend": "gpu",
       "device_kind": "NVIDIA H100 80GB HBM3", "device_count": 1},
      {"impl": "generate", "model": "creps", "res": 512, "batch": 16, "dtype": "float32",
       "s_per_img": 0.001, "img_per_s": 1000.0, "gflop_per_img": 200.0, "compile_s": 30.0,
       "peak_device_mib": 12345.4},
      {"impl": "generate", "model": "creps", "res": 512, "batch": 16, "dtype": "bfloat16",
       "s_per_img": 0.0005, "img_per_s": 2000.0, "gflop_per_img": 200.0, "compile_s": 31.0,
       "peak_device_mib": 8000.0},
      {"impl": "train", "model": "creps", "res": 512, "dtype": "float32", "batch": 16,
       "out_of_memory": {"32": "RESOURCE_EXHAUSTED"}, "s_per_kimg": 30.04, "img_per_s": 33.3,
       "s_per_step": 0.48, "peak_device_mib": 70000.0},
      {"impl": "train", "model": "creps", "res": 1024, "dtype": "float32", "batch": None,
       "out_of_memory": {"8": "RESOURCE_EXHAUSTED"}, "peak_device_mib": 79000.0},
      {"impl": "gemm_peak", "gflops": 400e3, "gflops_bfloat16": 800e3}]
  out = _module_call(f"import json; print(a.tables(json.loads({json.dumps(json.dumps(results))})))")
  lines = out.splitlines()
  assert lines[0] == ("Device: NVIDIA H100 80GB HBM3 (gpu). GEMM peak in this run: float32 "
                      "400000 GFLOP/s, bfloat16 800000 GFLOP/s.")
  # 200 GFLOP x 1000 img/s = 200 TFLOP/s: 50 % of 400 (f32); x 2000 = 50 % of 800 (bf16).
  assert "| creps | 512 | 16 | float32 | 0.0010 | 1000.0 | 50 % | 12345 | 30 |" in lines
  assert "| creps | 512 | 16 | bfloat16 | 0.0005 | 2000.0 | 50 % | 8000 | 31 |" in lines
  assert "| creps | 512 | float32 | 16 | 30.0 | 33.3 | 0.480 | 70000 | 32 |" in lines
  assert "| creps | 1024 | float32 | none fits | - | - | - | 79000 | 8 |" in lines
