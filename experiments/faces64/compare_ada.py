r"""faces64 with and without ADA: SWD against the holdout faces and p over time.

  python -m gen_synth.main --config=experiments/faces64/config.py \
      --workdir=/tmp/f64/none --config.data.data_dir=/tmp/faces64_tfds \
      --config.train.total_kimg=16 --config.train.augment=none
  python -m gen_synth.main --config=experiments/faces64/config.py \
      --workdir=/tmp/f64/ada --config.data.data_dir=/tmp/faces64_tfds \
      --config.train.total_kimg=16 --config.train.augment=ada --config.train.ada_kimg=10
  pip install -e ".[experiments]"     # matplotlib, for ada_compare.png
  python experiments/faces64/compare_ada.py --runs=none:/tmp/f64/none,ada:/tmp/f64/ada \
      --out=experiments/faces64

Reads each run's metrics.jsonl; prints a markdown table (SWD at every
evaluation, p and the mean sign of D on the reals around it) and writes
ada_compare.png and ada_compare.json into --out.
"""

import json
import os

from absl import app
from absl import flags

_RUNS = flags.DEFINE_list("runs", None, "name:workdir pairs.")
_OUT = flags.DEFINE_string("out", os.path.dirname(__file__), "Output folder.")
_WINDOW = flags.DEFINE_integer("window", 100, "Steps before each evaluation whose "
                               "real_signs are averaged.")


def load(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  latest = {}
  for r in records:            # a resumed run repeats steps: keep the last record
    latest.setdefault(r["step"], {}).update(r)
  return [latest[s] for s in sorted(latest)]


def summarize(records, window):
  rows = []
  for r in records:
    if "eval/swd" not in r:
      continue
    step = r["step"]
    near = [q for q in records if step - window < q["step"] <= step and "real_signs" in q]
    p = [q["aug_p"] for q in records if q["step"] <= step and "aug_p" in q]
    rows.append({
        "step": step, "kimg": r.get("kimg"), "swd": r["eval/swd"],
        "aug_p": p[-1] if p else 0.0,
        "real_signs": (sum(q["real_signs"] for q in near) / len(near)) if near else None})
  return rows


def markdown(table):
  """{run: summarize(...)} -> a markdown table, one row per evaluated step."""
  names = list(table)
  steps = sorted({row["step"] for rows in table.values() for row in rows})
  lines = ["| step | " + " | ".join(f"SWD {n} | p {n} | sign {n}" for n in names) + " |",
           "|" + "---|" * (1 + 3 * len(names))]
  for step in steps:
    cells = []
    for n in names:
      row = next((r for r in table[n] if r["step"] == step), None)
      if row is None:
        cells += ["", "", ""]
        continue
      sign = "" if row["real_signs"] is None else f"{row['real_signs']:.2f}"
      cells += [f"{row['swd']:.1f}", f"{row['aug_p']:.3f}", sign]
    lines.append(f"| {step} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  runs = dict(pair.split(":", 1) for pair in _RUNS.value)
  records = {name: load(path) for name, path in runs.items()}
  table = {name: summarize(recs, _WINDOW.value) for name, recs in records.items()}
  print(markdown(table))

  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "ada_compare.json"), "w") as f:
    json.dump(table, f, indent=1)
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed (pip install -e '.[experiments]'): "
          "ada_compare.png not written")
    return
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for n, recs in records.items():
    rows = table[n]
    axes[0].plot([r["step"] for r in rows], [r["swd"] for r in rows], marker="o", label=n)
    pts = [(q["step"], q["aug_p"]) for q in recs if "aug_p" in q]
    axes[1].plot([s for s, _ in pts], [v for _, v in pts], label=f"p ({n})")
    sig = [(q["step"], q["real_signs"]) for q in recs if "real_signs" in q]
    axes[1].plot([s for s, _ in sig], [v for _, v in sig], alpha=0.4, label=f"mean sign D(real) ({n})")
  axes[0].set_title("SWD x1e3 vs 810 holdout faces")
  axes[1].axhline(0.6, color="grey", ls="--", lw=0.8)
  axes[1].set_title("ADA: p and the sign statistic (target 0.6)")
  for ax in axes:
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(_OUT.value, "ada_compare.png"), dpi=80)


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
