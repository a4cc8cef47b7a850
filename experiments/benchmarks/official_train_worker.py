r"""Times the official CREPS training phases (run by experiments/benchmarks/train.py).

Runs with the official code's own Python (torch installed) and imports the
official modules from --official_repo; nothing of it is copied. Builds G and
D as the official `train.py --cfg=creps` does (G channel_base 65536 and
channel_max 1024, D 32768 / 512, resnet D, mbstd 4, conv_clamp 256, fp32,
no augmentation), drives each phase as `training/training_loop.py` does
(zero_grad, requires_grad, `StyleGAN2Loss.accumulate_gradients(phase, gain)`,
nan_to_num, Adam step; then the EMA) and prints one JSON line of the median
seconds per phase, the peak RSS and torch's f32 GEMM rate.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def gemm_gflops(torch, n=2048, reps=5):
  a = torch.randn(n, n)
  a @ a
  best = min(_timed(lambda: a @ a) for _ in range(reps))
  return 2 * n ** 3 / best / 1e9


def _timed(fn):
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--official_repo", required=True)
  parser.add_argument("--res", type=int, default=128)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--r1_gamma", type=float, default=1.0)
  parser.add_argument("--pl_weight", type=float, default=2.0)
  parser.add_argument("--style_mixing_prob", type=float, default=0.0)
  parser.add_argument("--phases", default="Gmain,Greg,Dmain,Dreg")
  args = parser.parse_args()
  t_start = time.perf_counter()
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.abspath(args.official_repo))
  from training import loss as loss_lib  # pylint: disable=g-import-not-at-top
  from training import networks_creps, networks_stylegan2  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  res, batch = args.res, args.batch
  G = networks_creps.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res,
                               img_channels=3, channel_base=65536, channel_max=1024,
                               biline_channels=32, mapping_kwargs=dict(num_layers=8))
  D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=res, img_channels=3,
                                       channel_base=32768, channel_max=512, num_fp16_res=0,
                                       conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4))
  G_ema = networks_creps.Generator(**G.init_kwargs).eval()
  G_ema.load_state_dict(G.state_dict())
  for g in (G, G_ema):      # fp32 on CPU (the refinement blocks hard-wire fp16 otherwise)
    g.synthesis.block0.use_fp16 = g.synthesis.block1.use_fp16 = False
  G.train(), D.train()
  for m in (G, D, G_ema):
    m.requires_grad_(False)
  loss = loss_lib.StyleGAN2Loss(device=torch.device("cpu"), G=G, D=D, augment_pipe=None,
                                r1_gamma=args.r1_gamma, style_mixing_prob=args.style_mixing_prob,
                                pl_weight=args.pl_weight, pl_batch_shrink=2, pl_decay=0.01)

  def adam(module, interval):
    ratio = interval / (interval + 1)
    return torch.optim.Adam(module.parameters(), lr=0.002 * ratio,
                            betas=(0 ** ratio, 0.99 ** ratio), eps=1e-8)
  g_opt, d_opt = adam(G, 4), adam(D, 16)
  phases = {"Gmain": (G, g_opt, 1), "Greg": (G, g_opt, 4), "Dmain": (D, d_opt, 1),
            "Dreg": (D, d_opt, 16)}
  real = torch.rand(batch, 3, res, res) * 2 - 1
  c = torch.zeros([batch, 0])

  def run(phase):
    module, opt, gain = phases[phase]
    opt.zero_grad(set_to_none=True)
    module.requires_grad_(True)
    loss.accumulate_gradients(phase=phase, real_img=real, real_c=c,
                              gen_z=torch.randn(batch, 512), gen_c=c, gain=gain, cur_nimg=0)
    module.requires_grad_(False)
    for p in module.parameters():
      if p.grad is not None:
        torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    opt.step()

  def ema():
    with torch.no_grad():
      for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, 0.999))
      for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)

  names = args.phases.split(",")
  for phase in names:                       # the first iteration (start-up)
    run(phase)
  ema()
  startup = time.perf_counter() - t_start
  times = {phase: [] for phase in names + ["ema"]}
  for _ in range(args.reps):
    for phase in names:
      times[phase].append(_timed(lambda: run(phase)))
    times["ema"].append(_timed(ema))
  print(json.dumps({
      "impl": "official", "res": res, "batch": batch, "torch": torch.__version__,
      "threads": torch.get_num_threads(),
      "s": {k: float(np.median(v)) for k, v in times.items()},
      "s_all": times, "startup_s": startup,
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "torch_gemm_gflops": gemm_gflops(torch)}))


if __name__ == "__main__":
  main()
