"""gen_synth.compilation_cache: a resumed `gen_synth.main` loads its compiled phases."""

import os
import pathlib
import subprocess
import sys

from gen_synth import compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_directory_auto_none_and_a_users_folder():
  d = compilation_cache.directory
  assert d("auto", "/runs/a", 3) == "/runs/a/compilation_cache/process_3"
  assert d("auto", "/runs/a", 0, configured="/cache") == "/cache"     # the user's wins
  assert d("none", "/runs/a", 0, configured="/cache") is None
  assert d("/shared/xla", "/runs/a", 1) == "/shared/xla/process_1"


def _train(workdir, data_dir, steps):
  c = "--config."
  env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)                # 'auto' -> the workdir's
  argv = [sys.executable, "-m", "gen_synth.main", "--config=configs/creps_ffhq.py:tiny",
          f"--workdir={workdir}", f"{c}data.data_dir={data_dir}", f"{c}data.num_demo_crops=64",
          f"{c}train.batch_size=16", f"{c}train.pl_interval=2", f"{c}train.r1_interval=2",
          f"{c}checkpoint_every_steps=1", f"{c}sample_every_steps=0",
          f"{c}progress_bar=False", f"{c}eval.every_steps=0", f"{c}train.total_steps={steps}"]
  r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-4000:]
  return r


def test_a_resumed_run_loads_the_compiled_training_phases(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  cache = workdir / "compilation_cache" / "process_0"
  _train(workdir, data_dir, steps=1)             # step 0 runs (and compiles) every phase
  phases = {p.name: p.stat().st_mtime_ns for p in cache.glob("jit_run_phase-*")}
  assert len(phases) == 5, sorted(phases)        # g_main, g_pl, d_main, d_r1, finish
  r = _train(workdir, data_dir, steps=2)         # resumes at step 1
  assert "Resumed from" in r.stderr
  # The resumed process compiled the same phases: read from the cache, none written.
  assert {p.name: p.stat().st_mtime_ns for p in cache.glob("jit_run_phase-*")} == phases
