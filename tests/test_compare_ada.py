"""experiments/faces64/compare_ada.py: the ADA / no-ADA report's arithmetic."""

import importlib.util
import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "faces64" / "compare_ada.py"


def _module():
  spec = importlib.util.spec_from_file_location("compare_ada", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _write_run(path, p_of_step, sign_of_step):
  path.mkdir()
  with open(path / "metrics.jsonl", "w") as f:
    for step in range(20, 101, 20):     # training windows: logged every 20 steps
      f.write(json.dumps({"step": step, "aug_p": p_of_step(step),
                          "real_signs": sign_of_step(step)}) + "\n")
    for step, swd in ((0, 150.0), (60, 90.0), (100, 70.0)):
      f.write(json.dumps({"step": step, "eval/swd": swd}) + "\n")
    # A resumed run repeats step 100's evaluation: the last record wins.
    f.write(json.dumps({"step": 100, "eval/swd": 65.0}) + "\n")


def test_summary_takes_p_at_the_evaluation_and_averages_signs_over_the_window(tmp_path):
  ada = tmp_path / "ada"
  _write_run(ada, lambda s: s / 1000, lambda s: 0.5 + s / 1000)
  module = _module()
  rows = module.summarize(module.load(str(ada)), window=40)
  assert [r["step"] for r in rows] == [0, 60, 100]
  assert [r["swd"] for r in rows] == [150.0, 90.0, 65.0]
  assert [r["aug_p"] for r in rows] == [0.0, 0.06, 0.1]
  assert rows[0]["real_signs"] is None                    # nothing logged before step 0
  assert abs(rows[1]["real_signs"] - (0.54 + 0.56) / 2) < 1e-12     # steps 40 and 60
  assert abs(rows[2]["real_signs"] - (0.58 + 0.6) / 2) < 1e-12      # steps 80 and 100


def test_table_and_json_from_the_command_line(tmp_path):
  _write_run(tmp_path / "none", lambda s: 0.0, lambda s: 0.9)
  _write_run(tmp_path / "ada", lambda s: s / 1000, lambda s: 0.5)
  out = subprocess.run(
      [sys.executable, str(SCRIPT), f"--runs=none:{tmp_path / 'none'},ada:{tmp_path / 'ada'}",
       f"--out={tmp_path / 'report'}", "--window=40"],
      capture_output=True, text=True, check=True, timeout=300).stdout
  assert "| step | SWD none | p none | sign none | SWD ada | p ada | sign ada |" in out
  assert "| 100 | 65.0 | 0.000 | 0.90 | 65.0 | 0.100 | 0.50 |" in out
  saved = json.loads((tmp_path / "report" / "ada_compare.json").read_text())
  assert set(saved) == {"none", "ada"} and len(saved["ada"]) == 3
