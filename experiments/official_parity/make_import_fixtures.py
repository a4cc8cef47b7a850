r"""Writes the official-checkpoint parity fixtures, by running the official code.

Needs torch and a user's clone of the official repository (never copied or
committed: it is imported from --official_repo). Not run in CI; CI tests the
files this writes (tests/test_import_official.py).

  pip install torch numpy
  python experiments/official_parity/make_import_fixtures.py --model=creps \
      --official_repo=PATH/TO/VinAIResearch/CREPS --out=tests/fixtures/official
  python experiments/official_parity/make_import_fixtures.py --model=pixelfolder \
      --official_repo=PATH/TO/BlingHe/PixelFolder --out=tests/fixtures/official
  python experiments/official_parity/make_import_fixtures.py --model=cips \
      --official_repo=PATH/TO/BlingHe/PixelFolder --out=tests/fixtures/official

For each case it builds the official G (and D) at a reduced width, perturbs
every tensor so that each one matters (biases, affine biases, w_avg, noise
strengths all non-default; weights rescaled so activations stay O(1), or, in
the `*_clamp` case, a few biases pushed far enough that the +-256 clamps act),
saves the networks in the official file format (CREPS: the training loop's
persistence pickle with G, D, G_ema; PixelFolder / CIPS: the `torch.save` of
the checkpoint dict their train.py writes) and renders, with the official
forward passes and fixed latents:

  CASE.npz  z [N, z_dim]; images_psi1 / images_psi07 [N, R, R, 3] (G_ema,
            truncation 1 and 0.7, noise off, fp32); images_g [N, R, R, 3] (G);
            truncation_latent [w_dim]; CREPS only: images_scale [N, S, S, 3]
            (gen_images.py --scale, S = 1.5 R); D: d_images [8, R, R, 3] and
            d_logits_b4 [8] (two batches of 4) and d_logits_b8 [8] (one batch
            of 8: minibatch-stddev groups of 4 over 8), act_max (largest |x|
            entering a clamp, to show which regime the case is in).

creps_d{64,128,256}.{pkl,npz}: the D alone at those resolutions (the 128 one in
the clamp regime), pickled as dict(D=...), with its logits at batch 4 and 8 on
uint8 images d_pixels [8, R, R, 3] (x / 127.5 - 1).

`--full_size` writes the official training configuration instead (CREPS-256:
~360 MB, kept out of git; tests read it from $GEN_SYNTH_OFFICIAL_FIXTURES).
The official CUDA ops are replaced by plain-PyTorch reference math where the
official code has no CPU path (PixelFolder's `op` package).
"""

import argparse
import copy
import os
import pickle
import shutil
import sys
import tempfile

import numpy as np

# --- plain-PyTorch stand-ins for PixelFolder's CUDA-only `op` package --------
OP_SHIM = r'''
import math
import torch
import torch.nn.functional as F


def fused_leaky_relu(x, bias, negative_slope=0.2, scale=math.sqrt(2)):
  shape = [1, -1] + [1] * (x.ndim - 2)
  return F.leaky_relu(x + bias.view(shape), negative_slope) * scale


class FusedLeakyReLU(torch.nn.Module):
  def __init__(self, channel, negative_slope=0.2, scale=math.sqrt(2)):
    super().__init__()
    self.bias = torch.nn.Parameter(torch.zeros(channel))
    self.negative_slope = negative_slope
    self.scale = scale

  def forward(self, x):
    return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
  """Zero-insertion upsampling, padding, true convolution with `kernel`, decimation."""
  b, c, h, w = x.shape
  if up > 1:
    y = x.new_zeros(b, c, h * up, w * up)
    y[:, :, ::up, ::up] = x
    x = y
  p0, p1 = pad
  x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
  x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
  k = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
  x = F.conv2d(x, k, groups=c)
  return x[:, :, ::down, ::down]
'''


def install_op_shim(tmp):
  pkg = os.path.join(tmp, "op")
  os.makedirs(pkg, exist_ok=True)
  with open(os.path.join(pkg, "__init__.py"), "w") as f:
    f.write(OP_SHIM)
  sys.path.insert(0, tmp)


# --- perturbation --------------------------------------------------------------

def perturb(module, rng, clamp_case=False, bias_scale=0.2, clamp_names=()):
  """Makes every tensor matter: non-zero biases, affine biases != 1, noise strengths != 0."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    for name, p in module.named_parameters():
      leaf = name.split(".")[-1]
      noise = torch.from_numpy(rng.standard_normal(p.shape).astype(np.float32))
      if leaf == "bias" and ".affine." in f".{name}" or name.endswith("modulation.bias"):
        p.add_(bias_scale * noise)                       # around bias_init 1
      elif leaf == "bias" or (leaf == "weight" and p.ndim == 1 and p.numel() == 1):
        p.copy_(bias_scale * noise)                      # biases 0 -> N(0, s); noise strength
      else:
        p.mul_(1.0 + 0.1 * noise)                        # weights: keep N(0, 1)-like
    for name, b in module.named_buffers():
      if name.endswith("w_avg"):
        b.copy_(0.3 * torch.from_numpy(rng.standard_normal(b.shape).astype(np.float32)))
    if clamp_case:
      for name, p in module.named_parameters():
        if any(name.startswith(c) for c in clamp_names) and name.endswith(".bias"):
          p[::2] += 300.0                                # pushes half the channels into +-256


def rescale_outputs(model, run, names, target=2.0):
  """Scales the weight and bias of each named layer (in order) until its |output| <= target.

  Random weights make the decoders' and refinement blocks' activations grow
  layer after layer; this keeps them O(1), so that float32 comparisons are
  meaningful and no clamp is hit unless a case asks for it.
  """
  import torch  # pylint: disable=g-import-not-at-top
  modules = dict(model.named_modules())
  for name in names:
    seen = []
    hook = modules[name].register_forward_hook(
        lambda m, i, o: seen.append(float(o.detach().abs().max())))
    with torch.no_grad():
      run()
    hook.remove()
    if seen[0] > target:
      params = list(modules[name].parameters(recurse=False))
      if type(modules[name]).__name__ == "ToRGB":         # out = conv(x) + bias (+ skip)
        params.append(modules[name].conv.weight)
      with torch.no_grad():
        for p in params:
          p.mul_(target / seen[0])


def clamp_inputs_max(model, run, layer_types):
  """Largest |pre-clamp activation| of `layer_types` over `run()` (forward hooks)."""
  import torch  # pylint: disable=g-import-not-at-top
  seen = []
  hooks = [m.register_forward_hook(lambda m, i, o: seen.append(float(o.detach().abs().max())))
           for m in model.modules() if type(m).__name__ in layer_types]
  with torch.no_grad():
    run()
  for h in hooks:
    h.remove()
  return max(seen) if seen else 0.0


def nhwc(x):
  return x.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


# --- CREPS ------------------------------------------------------------------------

CREPS_SMALL = dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=1024, channel_max=64,
                   mapping_layers=8, biline_channels=16)
CREPS_FULL = dict(z_dim=512, w_dim=512, img_resolution=256, channel_base=65536,
                  channel_max=1024, mapping_layers=8, biline_channels=32)


def build_creps(repo, cfg, clamp_case, seed, n=4):
  """Official CREPS G, G_ema (perturbed apart) and D, activations O(1) (or in the clamps).

  Returns (G, G_ema, D, rng, z [n, z_dim], render(g, psi)); `render` passes
  force_fp32=True (the refinement blocks hard-wire fp16 otherwise).
  """
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, repo)
  from training import networks_creps, networks_stylegan2  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  res = cfg["img_resolution"]
  g_kwargs = dict(z_dim=cfg["z_dim"], c_dim=0, w_dim=cfg["w_dim"], img_resolution=res,
                  img_channels=3, channel_base=cfg["channel_base"],
                  channel_max=cfg["channel_max"], biline_channels=cfg["biline_channels"],
                  mapping_kwargs=dict(num_layers=cfg["mapping_layers"]))
  G = networks_creps.Generator(**g_kwargs).eval()
  # D as train.py builds it for creps: cbase / cmax not doubled, resnet, mbstd 4.
  D = networks_stylegan2.Discriminator(
      c_dim=0, img_resolution=res, img_channels=3, channel_base=cfg["channel_base"] // 2,
      channel_max=cfg["channel_max"] // 2, num_fp16_res=0, conv_clamp=256,
      epilogue_kwargs=dict(mbstd_group_size=4)).eval()
  blocks = [f"synthesis.b{r}.fc1" for r in (8, 16)]
  perturb(G, rng, clamp_case, clamp_names=blocks)
  G_ema = copy.deepcopy(G)
  perturb(G_ema, rng, clamp_case, bias_scale=0.1, clamp_names=blocks)
  perturb(D, rng, clamp_case, clamp_names=[f"b{res}.conv0"])

  z = torch.from_numpy(rng.standard_normal((n, cfg["z_dim"])).astype(np.float32))
  render = lambda g, psi: g(z, None, truncation_psi=psi, noise_mode="const", force_fp32=True)
  order = []
  for r in G.synthesis.block_resolutions[1:]:
    order.append(f"synthesis.b{r}.tores")
    if r > 8:
      order += [f"synthesis.decoder_{r}.{i}" for i in range(4)]
  order += [f"synthesis.decoder_last.{i}" for i in range(4)] + ["synthesis.decoder_img"]
  order += ["synthesis.block0.tores", "synthesis.block1.tores"]   # (fc0/fc1 are demodulated)
  for g in (G, G_ema):
    rescale_outputs(g, lambda g=g: render(g, 1), order)
  return G, G_ema, D, rng, z, render


def save_snapshot(path, G, D, G_ema, res):
  """The training loop's network pickle: dict(G, D, G_ema, augment_pipe, training_set_kwargs)."""
  import torch  # pylint: disable=g-import-not-at-top
  snapshot = dict(G=G, D=D, G_ema=G_ema, augment_pipe=None,
                  training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset",
                                           path="ffhq.zip", resolution=res, use_labels=False,
                                           xflip=True))
  for key, value in snapshot.items():
    if isinstance(value, torch.nn.Module):
      snapshot[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
  with open(path, "wb") as f:
    pickle.dump(snapshot, f)


def creps_case(repo, out, name, cfg, clamp_case, seed):
  import torch  # pylint: disable=g-import-not-at-top
  G, G_ema, D, rng, z, render = build_creps(repo, cfg, clamp_case, seed)
  res, n = cfg["img_resolution"], z.shape[0]
  act_max = clamp_inputs_max(G_ema, lambda: render(G_ema, 1), ("SynthesisLayer", "ToResLayer"))
  with torch.no_grad():
    data = dict(z=z.numpy(), images_psi1=nhwc(render(G_ema, 1)),
                images_psi07=nhwc(render(G_ema, 0.7)), images_g=nhwc(render(G, 1)),
                truncation_latent=G_ema.mapping.w_avg.numpy().copy())
    # gen_images.py --scale 1.5: b4's coordinate buffer replaced by linspace(0, 1, 1.5 R).
    scaled = copy.deepcopy(G_ema)
    size = int(res * 1.5)
    coords = torch.linspace(0, 1, size).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1)
    scaled.synthesis.b4.input.coords = coords
    data["images_scale"] = nhwc(render(scaled, 1))
    d_images = torch.from_numpy(rng.uniform(-1, 1, (8, 3, res, res)).astype(np.float32))
    d_images[:n] = render(G_ema, 1).clamp(-1, 1)
    data["d_images"] = nhwc(d_images)
    data["d_logits_b4"] = torch.cat([D(d_images[:4], None), D(d_images[4:], None)])[:, 0].numpy()
    data["d_logits_b8"] = D(d_images, None)[:, 0].numpy()
  data["act_max"] = np.float32(act_max)
  save_snapshot(os.path.join(out, f"{name}.pkl"), G, D, G_ema, res)
  np.savez_compressed(os.path.join(out, f"{name}.npz"), **data)
  print(f"{name}: act_max {act_max:.1f}, image max {np.abs(data['images_psi1']).max():.3f}")


# --- PixelFolder / CIPS -------------------------------------------------------

def with_widths(cls, widths):
  """The official class with its hard-coded `self.channels` table replaced by `widths`.

  The official constructors build every layer from that table, so the
  reduced-width model is the official architecture with fewer channels.
  """
  def __setattr__(self, key, value):
    if key == "channels":
      value = dict(widths)
    cls.__setattr__(self, key, value)
  return type(cls.__name__, (cls,), {"__setattr__": __setattr__})


def shrunk_discriminator(model_pkg, blocks, res, factor=16):
  """The official rosinality `Discriminator` at 1/`factor` of its widths.

  Its channel table is a local dict, so the layer constructors it calls are
  wrapped instead: every width argument is divided by `factor` (512 -> 32;
  the mbstd input 513 -> 33; the flattened 512 * 16 -> 32 * 16).
  """
  mod = sys.modules[model_pkg.Discriminator.__module__]
  shrink = lambda c: c if c <= 3 else (c // factor if c % factor == 0 else (c - 1) // factor + 1)
  saved = {k: getattr(mod, k) for k in ("ConvLayer", "ResBlock", "EqualLinear")}
  mod.ConvLayer = lambda i, o, k, *a, **kw: blocks.ConvLayer(shrink(i), shrink(o), k, *a, **kw)
  mod.ResBlock = lambda i, o, *a, **kw: blocks.ResBlock(shrink(i), shrink(o), *a, **kw)
  mod.EqualLinear = lambda i, o, *a, **kw: blocks.EqualLinear(shrink(i), shrink(o), *a, **kw)
  try:
    return model_pkg.Discriminator(size=res, channel_multiplier=2)
  finally:
    for k, v in saved.items():
      setattr(mod, k, v)


def rosinality_case(repo, out, name, kind, res, widths, z_dim, hidden, n_mlp, clamp_case, seed):
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, repo)
  tmp = tempfile.mkdtemp(prefix="gen_synth_op_shim_")
  install_op_shim(tmp)                     # ahead of the repo's own CUDA-only `op`
  import model as model_pkg  # pylint: disable=g-import-not-at-top
  from model import blocks  # pylint: disable=g-import-not-at-top
  import tensor_transforms as tt  # pylint: disable=g-import-not-at-top
  shutil.rmtree(tmp)                       # imported; nothing left in the temp dir
  blocks.NoiseInjection.forward = lambda self, image, noise=None: image   # noise off
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  if kind == "pixelfolder":
    cls = with_widths(model_pkg.PixelFolder, widths)
    make = lambda: cls(size=res, style_dim=z_dim, n_mlp=n_mlp, channel_multiplier=2)
  else:
    table = {i: widths[2 ** (i + 2)] for i in range(9)}
    cls = with_widths(model_pkg.CIPSskip, table)
    make = lambda: cls(size=res, hidden_size=hidden, style_dim=z_dim, n_mlp=n_mlp,
                       channel_multiplier=2)
  g = make().eval()
  perturb(g, rng)
  g_ema = make().eval()
  g_ema.load_state_dict(g.state_dict())
  perturb(g_ema, rng, bias_scale=0.1)
  n = 4
  z = torch.from_numpy(rng.standard_normal((n, z_dim)).astype(np.float32))
  coords = tt.convert_to_coord_format(n, res, res)
  plain = lambda m: m(coords, [z])[0]
  for m in (g, g_ema):
    rescale_outputs(m, lambda m=m: plain(m), [f"to_rgbs.{i}" for i in range(len(m.to_rgbs))])
  with torch.no_grad():
    mean_latent = g_ema.style(torch.from_numpy(
        rng.standard_normal((4096, z_dim)).astype(np.float32))).mean(0)
    if kind == "cips":
      # CIPSskip.forward truncates the *z* it is given toward the mean *w* before
      # mapping it; its w path (input_is_latent) truncates w, as StyleGAN and
      # gen_synth do, so truncation is compared on that path.
      render = lambda m, psi: m(coords, [m.style(z)], truncation=psi,
                                truncation_latent=mean_latent, input_is_latent=True)[0]
    else:
      render = lambda m, psi: m(coords, [z], truncation=psi, truncation_latent=mean_latent)[0]
    data = dict(z=z.numpy(), images_psi1=nhwc(render(g_ema, 1)),
                images_psi07=nhwc(render(g_ema, 0.7)), images_g=nhwc(render(g, 1)),
                truncation_latent=mean_latent.numpy())
    if kind == "cips":
      g_ema.train()          # training mode: the constant itself at R x R (no grid_sample)
      data["images_train_mode"] = nhwc(render(g_ema, 1))
      g_ema.eval()
  d = shrunk_discriminator(model_pkg, blocks, res).eval()
  perturb(d, rng)
  with torch.no_grad():
    d_images = torch.from_numpy(rng.uniform(-1, 1, (8, 3, res, res)).astype(np.float32))
    d_images[:n] = render(g_ema, 1).clamp(-1, 1)
    data["d_images"] = nhwc(d_images)
    data["d_logits_b4"] = torch.cat([d(d_images[:4]), d(d_images[4:])])[:, 0].numpy()
    data["d_logits_b8"] = d(d_images)[:, 0].numpy()
  data["act_max"] = np.float32(0)
  # the dict train.py saves: {g, d, g_ema, g_optim, d_optim} (fresh Adam states here)
  adam = lambda m: torch.optim.Adam(m.parameters(), lr=0.002, betas=(0.0, 0.99)).state_dict()
  ckpt = dict(g=g.state_dict(), d=d.state_dict(), g_ema=g_ema.state_dict(),
              g_optim=adam(g), d_optim=adam(d))
  torch.save(ckpt, os.path.join(out, f"{name}.pt"))
  np.savez_compressed(os.path.join(out, f"{name}.npz"), **data)
  print(f"{name}: image max {np.abs(data['images_psi1']).max():.3f}")


D_ONLY = {  # name -> (resolution, channel_base, channel_max, clamp regime)
    "creps_d64": (64, 1024, 32, False),
    "creps_d128": (128, 1024, 32, True),
    "creps_d256": (256, 2048, 32, False),
}


def d_only_case(repo, out, name, res, cbase, cmax, clamp_case, seed):
  """The official StyleGAN2 D alone (as CREPS trains it) and its logits, batch 4 and 8."""
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, repo)
  from training import networks_stylegan2  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  D = networks_stylegan2.Discriminator(
      c_dim=0, img_resolution=res, img_channels=3, channel_base=cbase, channel_max=cmax,
      num_fp16_res=0, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4)).eval()
  perturb(D, rng, clamp_case, clamp_names=[f"b{res}.conv0", f"b{res // 2}.conv0"])
  # uint8 images (as real data), smooth so the fixture compresses: a few random waves.
  # (constant over 4x4 blocks: a quarter-resolution picture, so it compresses well)
  yy, xx = np.meshgrid(np.arange(res) // 4 * 4 / res, np.arange(res) // 4 * 4 / res,
                       indexing="ij")
  waves = sum(rng.uniform(0.3, 1, (8, 3, 1, 1)) * np.sin(
      2 * np.pi * (rng.uniform(-4, 4, (8, 3, 1, 1)) * yy + rng.uniform(-4, 4, (8, 3, 1, 1)) * xx)
      + rng.uniform(0, 6.3, (8, 3, 1, 1))) for _ in range(3))
  pixels = np.clip(np.round(127.5 + 127.5 * waves / 3), 0, 255).astype(np.uint8)
  with torch.no_grad():
    x = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1)
    data = dict(d_pixels=pixels.transpose(0, 2, 3, 1),
                d_logits_b4=torch.cat([D(x[:4], None), D(x[4:], None)])[:, 0].numpy(),
                d_logits_b8=D(x, None)[:, 0].numpy())
  data["act_max"] = np.float32(clamp_inputs_max(D, lambda: D(x, None), ("Conv2dLayer",)))
  with open(os.path.join(out, f"{name}.pkl"), "wb") as f:
    pickle.dump(dict(D=copy.deepcopy(D).eval().requires_grad_(False)), f)
  np.savez_compressed(os.path.join(out, f"{name}.npz"), **data)
  print(f"{name}: act_max {data['act_max']:.1f}, logit max {np.abs(data['d_logits_b8']).max():.3f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, choices=["creps", "pixelfolder", "cips"])
  parser.add_argument("--official_repo", required=True,
                      help="a clone of VinAIResearch/CREPS (creps) or BlingHe/PixelFolder")
  parser.add_argument("--out", default="tests/fixtures/official")
  parser.add_argument("--full_size", action="store_true")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  repo = os.path.abspath(args.official_repo)
  if args.model == "creps":
    if args.full_size:
      creps_case(repo, args.out, "creps256_full", CREPS_FULL, False, seed=3)
    else:
      creps_case(repo, args.out, "creps32", CREPS_SMALL, False, seed=1)
      creps_case(repo, args.out, "creps32_clamp", CREPS_SMALL, True, seed=2)
      for i, (name, (res, cbase, cmax, clamp)) in enumerate(D_ONLY.items()):
        d_only_case(repo, args.out, name, res, cbase, cmax, clamp, seed=20 + i)
  else:
    # reduced widths: min(512 / r, 32) for PixelFolder, min(512 / 2^(i+2), 32) for CIPS
    widths = {r: min(512 // r, 32) for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)}
    if args.model == "pixelfolder":
      rosinality_case(repo, args.out, "pixelfolder64", "pixelfolder", 64, widths, 32, 32, 8,
                      False, seed=4)
    else:
      widths = {r: max(min(256 // r, 32), 1) for r in widths}
      rosinality_case(repo, args.out, "cips16", "cips", 16, widths, 32, 16, 8, False, seed=5)


if __name__ == "__main__":
  main()
