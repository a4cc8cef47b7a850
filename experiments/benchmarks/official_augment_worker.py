"""Times the official AugmentPipe (run by experiments/benchmarks/augment.py).

Runs with the official code's own Python (torch installed) and imports
VinAIResearch/CREPS `training/augment.py` from --official_repo; nothing of it
is copied. The pipe is built with the `bgc` spec of the official train.py
(the dict below lists that preset's multipliers, a fact of the official code),
fp32 on the CPU, `grid_sample_gradfix.enabled = True` as the official training
loop sets it (torch's own grid_sample has no second derivative), p fixed.
The jobs are those of augment.py (fwd, vjp, r1); images NCHW as the official
code takes them. Prints one JSON line.
"""

import argparse
import json
import resource
import sys
import time

import numpy as np

BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--official_repo", required=True)
  parser.add_argument("--res", type=int, required=True)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--p", type=float, default=0.6)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, args.official_repo)
  from torch_utils.ops import grid_sample_gradfix  # pylint: disable=g-import-not-at-top
  from training import augment  # pylint: disable=g-import-not-at-top
  grid_sample_gradfix.enabled = True
  pipe = augment.AugmentPipe(**BGC).train().requires_grad_(False)
  pipe.p.copy_(torch.as_tensor(args.p))
  torch.manual_seed(0)
  x0 = torch.rand([args.batch, 3, args.res, args.res]) * 2 - 1
  w0 = torch.randn_like(x0)

  def fwd():
    with torch.no_grad():
      return pipe(x0)

  def vjp():
    x = x0.detach().requires_grad_(True)
    (pipe(x) * w0).sum().backward()
    return x.grad

  def r1():
    x = x0.detach().requires_grad_(True)
    w = w0.detach().requires_grad_(True)
    gx, = torch.autograd.grad((pipe(x) * w).sum(), [x], create_graph=True)
    gx.square().sum().backward()
    return w.grad

  s = {}
  for name, job in (("fwd", fwd), ("vjp", vjp), ("r1", r1)):
    job()
    times = []
    for _ in range(args.reps):
      t = time.perf_counter()
      job()
      times.append(time.perf_counter() - t)
    s[name] = float(np.median(times))
  print(json.dumps({"impl": "official", "res": args.res, "batch": args.batch, "p": args.p, "s": s,
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
  main()
