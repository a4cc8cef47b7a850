"""Training survives `kill -9` at any moment: experiments/kill_drill.py --short.

The drill trains the tiny config of test_train.py with `python -m
gen_synth.main` uninterrupted (run A), then again while SIGKILLing it during
start-up/compile, mid-step and mid-save, resuming after each kill (run B), and
compares the checkpoints of A and B leaf by leaf, bit for bit (G_ema with w_avg,
G, D, both Adam states, step, PL mean) and their data positions. The phase of
each kill is read off the disk by the drill, not assumed; a save kill must have
left orbax's temporary directory behind, i.e. have really interrupted a save.
"""

import json
import os
import pathlib
import subprocess
import sys

DRILL = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "kill_drill.py"


def test_kill_drill_resumes_bit_exactly_after_kills_in_every_phase(tmp_path):
  workdir = tmp_path / "drill"
  cache = os.environ.get("GEN_SYNTH_TEST_JAX_CACHE", "/tmp/gen_synth_test_jax_cache")
  proc = subprocess.run(
      [sys.executable, str(DRILL), "--short", f"--workdir={workdir}",
       f"--data_dir={tmp_path.parent / 'tfds'}",       # the session's shared demo build
       f"--jax_cache_dir={cache}"],                    # restarts load compiles, as the suite's
      capture_output=True, text=True, timeout=1800)
  assert proc.stdout.strip(), proc.stderr[-4000:]
  summary = json.loads(proc.stdout)
  print(json.dumps({k: summary.get(k) for k in (
      "kills", "kills_per_phase", "run_a", "run_b_wall_s", "wall_s")}, indent=1))
  assert "error" not in summary, summary["error"][-4000:]
  assert summary["mismatch_count"] == 0, summary["mismatches"]
  assert proc.returncode == 0 and summary["ok"], (summary, proc.stderr[-4000:])

  per_phase = summary["kills_per_phase"]
  assert all(per_phase[p] >= 1 for p in ("compile", "step", "save")), summary["kills"]
  assert summary["restarts"] == len(summary["kills"])       # relaunched after every kill
  # At least one killed launch and the last one resumed from a checkpoint (the
  # restore and the data position are exercised, not only a restart from zero).
  assert (summary.get("last_launch") or {}).get("resumed_from") is not None, summary
  assert any(k["resumed_from"] is not None for k in summary["kills"]), summary["kills"]
  for kill in summary["kills"]:
    if kill["phase"] == "save":                             # died before orbax committed
      assert kill["interrupted_save"], kill
    if kill["phase"] == "compile":
      assert kill["steps_logged"] == 0, kill
  # Both runs reached the end, and every leaf of the last checkpoint was compared
  # (~460 for the tiny CREPS: G_ema, w_avg, G, D, Adam mu/nu/count, step, PL mean).
  assert summary["steps"] in summary["steps_compared"]
  assert summary["leaves_compared"] >= 400
  # 6 steps of 16 images over the 64 demo crops: epoch 1, index 32, in both runs.
  assert summary["final_meta"] == {"data_position": {"epoch": 1, "index": 32}, "step": 6}
  assert not workdir.exists()                               # the drill removed what it made
