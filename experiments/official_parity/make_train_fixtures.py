r"""Writes the training-parity fixtures: one official CREPS iteration, phase by phase.

Needs torch and a user's clone of VinAIResearch/CREPS (imported from
--official_repo, never copied or committed). Not run in CI; CI tests the files
this writes (tests/test_train_parity.py).

  python experiments/official_parity/make_train_fixtures.py \
      --official_repo=PATH/TO/CREPS --out=tests/fixtures/official

Per case it builds the official CREPS G, G_ema and D (train.py's classes, at
reduced widths; every tensor perturbed as in make_import_fixtures.py), saves
them as the training loop's pickle (CASE.pkl, which the test imports with
gen_synth.import_official, so the import path is exercised too) and runs one
iteration of `training/training_loop.py`'s phase loop with the official
`StyleGAN2Loss`, `--aug=noaug`, in float64 (the official modules' float32
casts redirected by a dtype shim; the official float32 run differs from it by
up to 3e-4 of a gradient's norm in the early CREPS layers, see the
`*/official_f32_grad_rel_max` entries, which is why float64 is the reference):

  phases Gmain, Greg (gain 4), Dmain, Dreg (gain 16) -- all due: the iteration
  is batch_idx 16 (cur_nimg = 16 B, so the EMA ramp-up gives a beta that an
  off-by-one step would change); Adam(lr 0.002 * I / (I + 1), betas
  (0, 0.99) ** (I / (I + 1)), eps 1e-8) with fresh moments, I = 4 (G) / 16 (D);
  the loss's pl_mean starts at 0.25; then the EMA of G into G_ema and the copy
  of G's buffers (w_avg) into G_ema.

The iteration's random draws are fixed and saved: each phase's latents, the
path-length noise (`torch.randn_like` inside Greg is fed the saved N(0, 1)
array) and the real images. Recorded per phase (CASE_train.npz): the
per-sample values the loss reports (D scores, penalties, per-sample losses),
every parameter's gradient before the optimiser step (after the loop's
nan_to_num), the parameters after the step; after the EMA: G_ema, w_avg and
pl_mean. Official parameter names; the test maps them with the import tables.
"""

import argparse
import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_import_fixtures as mif  # pylint: disable=g-import-not-at-top,wrong-import-position

TRAIN_SMALL = dict(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=32,
                   mapping_layers=8, biline_channels=8)
CASES = {  # name -> (config, clamp regime, seed, batch, r1_gamma)
    "creps32_train": (TRAIN_SMALL, False, 11, 8, 1.0),
    "creps32_train_clamp": (TRAIN_SMALL, True, 12, 8, 1.0),   # fc1 biases pushed into +-256
}
START_STEP = 16
G_REG, D_REG = 4, 16


class _Float64Torch:
  """`torch` as the official modules see it, with torch.float32 meaning float64.

  The official code casts to torch.float32 explicitly (and asserts it), so
  running it in float64 needs its modules' `torch` global redirected; nothing
  else changes.
  """

  def __getattr__(self, name):
    import torch  # pylint: disable=g-import-not-at-top
    return torch.float64 if name == "float32" else getattr(torch, name)


OFFICIAL_MODULES = ("training.networks_creps", "training.networks_stylegan2",
                    "torch_utils.ops.bias_act", "torch_utils.ops.upfirdn2d",
                    "torch_utils.ops.conv2d_resample", "training.loss")


# Each phase starts from the networks the previous phases left (official names).
PHASE_START = {"Gmain": (None, None), "Greg": ("Gmain", None), "Dmain": ("Greg", None),
               "Dreg": ("Greg", "Dmain")}


def run_iteration(G, G_ema, D, rng_state, cfg, batch, r1_gamma, dtype, restart_from=None):
  """One official iteration on copies of G, G_ema, D in `dtype`; returns its record (float32).

  With `restart_from` (the record of another run), every phase starts from the
  parameters that run had at that phase's start: a float32 run restarted from
  the float64 record measures each phase's float32 rounding alone, without the
  drift of Adam's sign-like steps on near-zero gradients in earlier phases.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from training import loss as loss_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(rng_state)
  G, G_ema, D = (copy.deepcopy(m).to(dtype) for m in (G, G_ema, D))
  saved = {}
  if dtype == torch.float64:
    for name in OFFICIAL_MODULES:
      saved[name] = sys.modules[name].torch
      sys.modules[name].torch = _Float64Torch()
  for g in (G, G_ema):      # what force_fp32=True does; run_G has no such argument
    g.synthesis.block0.use_fp16 = g.synthesis.block1.use_fp16 = False
  G.train(), D.train(), G_ema.eval()
  res, z_dim = cfg["img_resolution"], cfg["z_dim"]
  loss = loss_lib.StyleGAN2Loss(device=torch.device("cpu"), G=G, D=D, augment_pipe=None,
                                r1_gamma=r1_gamma, style_mixing_prob=0, pl_weight=2,
                                pl_batch_shrink=2, pl_decay=0.01)
  loss.pl_mean = torch.full([], 0.25, dtype=dtype)
  data = {"pl_mean_before": np.float32(0.25), "start_step": np.int32(START_STEP),
          "batch": np.int32(batch), "r1_gamma": np.float32(r1_gamma)}

  def adam(module, interval):
    ratio = interval / (interval + 1)
    return torch.optim.Adam(module.parameters(), lr=0.002 * ratio,
                            betas=(0 ** ratio, 0.99 ** ratio), eps=1e-8)
  g_opt, d_opt = adam(G, G_REG), adam(D, D_REG)
  phases = [("Gmain", G, g_opt, 1), ("Greg", G, g_opt, G_REG), ("Dmain", D, d_opt, 1),
            ("Dreg", D, d_opt, D_REG)]
  tensor = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(dtype)
  f32 = lambda t: t.detach().to(torch.float32).numpy().copy()
  real = rng.uniform(-1, 1, (batch, 3, res, res)).astype(np.float32)
  data["real_images"] = real.transpose(0, 2, 3, 1)
  pl_noise = rng.standard_normal((batch // 2, 3, res, res)).astype(np.float32)
  data["pl_noise"] = pl_noise.transpose(0, 2, 3, 1)
  cur_nimg = START_STEP * batch

  reports = {}
  real_report = loss_lib.training_stats.report

  def report(name, value):
    if isinstance(value, torch.Tensor):
      reports.setdefault(name, f32(value))
    return real_report(name, value)
  loss_lib.training_stats.report = report
  real_randn_like = torch.randn_like
  try:
    for phase, module, opt, gain in phases:
      if restart_from is not None:
        with torch.no_grad():
          for net, start in zip((G, D), PHASE_START[phase]):
            if start is not None:
              for pname, p in net.named_parameters():
                p.copy_(tensor(restart_from[f"{start}/param/{pname}"]))
      z = rng.standard_normal((batch, z_dim)).astype(np.float32)
      data[f"{phase}/z"] = z
      reports.clear()
      opt.zero_grad(set_to_none=True)
      module.requires_grad_(True)
      torch.randn_like = (lambda x, *a, **k: tensor(pl_noise).to(x.dtype)) if phase == "Greg" \
          else real_randn_like
      loss.accumulate_gradients(phase=phase, real_img=tensor(real),
                                real_c=torch.zeros([batch, 0], dtype=dtype), gen_z=tensor(z),
                                gen_c=torch.zeros([batch, 0], dtype=dtype), gain=gain,
                                cur_nimg=cur_nimg)
      torch.randn_like = real_randn_like
      module.requires_grad_(False)
      for key, value in reports.items():
        data[f"{phase}/report/{key}"] = value
      for pname, p in module.named_parameters():
        if p.grad is not None:
          torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
          data[f"{phase}/grad/{pname}"] = f32(p.grad)
      opt.step()
      for pname, p in module.named_parameters():
        data[f"{phase}/param/{pname}"] = f32(p)
      data[f"{phase}/w_avg"] = f32(G.mapping.w_avg)
      data[f"{phase}/pl_mean"] = f32(loss.pl_mean)
    data["pl_mean_after"] = f32(loss.pl_mean)
    ema_nimg = min(batch * 10 / 32 * 1000, cur_nimg * 0.05)
    ema_beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
    with torch.no_grad():
      for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, ema_beta))
      for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
    data["ema_beta"] = np.float32(ema_beta)
    for pname, p in G_ema.state_dict().items():
      data[f"G_ema_after/{pname}"] = f32(p)
    data["w_avg_after"] = f32(G.mapping.w_avg)
  finally:
    torch.randn_like = real_randn_like
    loss_lib.training_stats.report = real_report
    for name, value in saved.items():
      sys.modules[name].torch = value
  return data


def make_case(repo, out, name, cfg, clamp_case, seed, batch, r1_gamma):
  import torch  # pylint: disable=g-import-not-at-top
  G, G_ema, D, rng, _, _ = mif.build_creps(repo, cfg, clamp_case, seed)
  mif.save_snapshot(os.path.join(out, f"{name}.pkl"), G, D, G_ema, cfg["img_resolution"])
  state = int(rng.integers(1 << 31))
  ref = run_iteration(G, G_ema, D, state, cfg, batch, r1_gamma, torch.float64)
  f32 = run_iteration(G, G_ema, D, state, cfg, batch, r1_gamma, torch.float32, restart_from=ref)
  # The official code's own float32 rounding, per phase and tensor / reported value:
  # no float32 implementation can be expected closer to the float64 reference.
  for key in list(ref):
    phase, _, rest = key.partition("/")
    if rest.startswith("grad/"):
      ref[f"{phase}/f32_rel/{rest[5:]}"] = np.float32(
          np.linalg.norm(f32[key] - ref[key]) / max(np.linalg.norm(ref[key]), 1e-30))
    elif rest.startswith("report/"):
      ref[f"{phase}/f32_report_rel/{rest[7:]}"] = np.float32(
          np.abs(f32[key] - ref[key]).max() / max(np.abs(ref[key]).max(), 1e-30))
  for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
    rel = {k: float(v) for k, v in ref.items() if k.startswith(f"{phase}/f32_rel/")}
    worst = max(rel, key=rel.get)
    print(f"{name} {phase}: official float32 vs float64 gradients: worst {worst} "
          f"{rel[worst]:.2e}, median {np.median(list(rel.values())):.2e}")
  np.savez_compressed(os.path.join(out, f"{name}.npz"), **ref)
  print(f"{name}: ema_beta {ref['ema_beta']:.4f}, pl_mean {float(ref['pl_mean_after']):.4f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--official_repo", required=True, help="a clone of VinAIResearch/CREPS")
  parser.add_argument("--out", default="tests/fixtures/official")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  for name, (cfg, clamp_case, seed, batch, gamma) in CASES.items():
    make_case(os.path.abspath(args.official_repo), args.out, name, cfg, clamp_case, seed,
              batch, gamma)


if __name__ == "__main__":
  main()
