r"""Plots a faces64 run: loss curves, SWD vs. holdout, and copies sample grids.

  pip install -e ".[experiments]"     # matplotlib
  python experiments/faces64/report.py --workdir=/tmp/faces64_run \
      --out=experiments/faces64 --grids=0,500,1000

Reads WORKDIR/metrics.jsonl and WORKDIR/samples/ (generated images only) and
writes losses.png, swd.png, samples_stepN.png and summary.json into --out.
"""

import json
import os
import shutil

from absl import app
from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "The faces64 run directory.")
_OUT = flags.DEFINE_string("out", os.path.dirname(__file__), "Output folder.")
_GRIDS = flags.DEFINE_string("grids", "", "Steps whose sample grids to copy (comma list; "
                             "default: first, middle, last).")


def series(records, key):
  points = [(r["step"], r[key]) for r in records if key in r]
  return [p[0] for p in points], [p[1] for p in points]


def main(argv):
  del argv
  with open(os.path.join(_WORKDIR.value, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  os.makedirs(_OUT.value, exist_ok=True)

  has_reg = any("r1_penalty" in r or "pl_penalty" in r for r in records[:-1])
  fig, axes = plt.subplots(1, 3 if has_reg else 2, figsize=(15 if has_reg else 10, 4))
  for key in ("g_loss", "d_loss"):
    axes[0].plot(*series(records, key), label=key)
  axes[0].set_title("losses (mean over each logging window)")
  for key in ("real_logits", "fake_logits"):
    axes[1].plot(*series(records, key), label=key)
  axes[1].set_title("D logits")
  if has_reg:   # runs before the logging fix recorded R1/PL only at their last step
    for key in ("r1_penalty", "pl_penalty"):
      axes[2].plot(*series(records, key), label=key)
    axes[2].set_yscale("log")
    axes[2].set_title("regularisers")
  for ax in axes:
    ax.set_xlabel("step")
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(_OUT.value, "losses.png"), dpi=80)

  fig, ax = plt.subplots(figsize=(6, 4))
  for key in ("eval/swd", "eval/swd_64", "eval/swd_32", "eval/swd_16"):
    steps, values = series(records, key)
    ax.plot(steps, values, marker="o", label=key.split("/")[1])
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("SWD x 1e3 vs. 810 holdout faces")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(_OUT.value, "swd.png"), dpi=80)

  sample_dir = os.path.join(_WORKDIR.value, "samples")
  available = sorted(int(n[4:12]) for n in os.listdir(sample_dir) if n.startswith("step"))
  wanted = ([int(s) for s in _GRIDS.value.split(",") if s] if _GRIDS.value else
            sorted({available[0], available[len(available) // 2], available[-1]}))
  for step in wanted:
    shutil.copy(os.path.join(sample_dir, f"step{step:08d}.png"),
                os.path.join(_OUT.value, f"samples_step{step}.png"))
  steps, swd = series(records, "eval/swd")
  last = [r for r in records if "g_loss" in r][-1]
  summary = {"steps": last["step"], "kimg": last["kimg"], "swd": dict(zip(steps, swd)),
             "grids": wanted}
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
