r"""Times the official generators (run by experiments/benchmarks/generation.py).

Runs with the official code's own Python (torch installed) and imports the
official modules from --official_repo; nothing of it is copied.

- creps: VinAIResearch/CREPS `training/networks_creps.Generator` as `train.py
  --cfg=creps` builds it (channel_base 65536, channel_max 1024, biline 32,
  8 mapping layers), random weights, fp32 (the refinement blocks hard-wire fp16
  otherwise), `G(z, c)` under `no_grad` as gen_images.py calls it.
- pixelfolder / cips: BlingHe/PixelFolder `model.PixelFolder` / `model.CIPSskip`
  as its train.py builds them (style_dim 512, 8 mapping layers, channel
  multiplier 2), `g(coords, [z])` under `no_grad`, with the plain-PyTorch
  stand-ins for its CUDA-only `op` package that the parity fixtures use
  (experiments/official_parity/make_import_fixtures.py: leaky ReLU + bias,
  upfirdn2d as zero insertion + depthwise convolution).

Prints one JSON line: median seconds per image of --reps timed calls after one
warm-up call, start-up, peak RSS and torch's own f32 GEMM rate.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))


def build_creps(repo, res):
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, repo)
  from training import networks_creps  # pylint: disable=g-import-not-at-top
  g = networks_creps.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res,
                               img_channels=3, channel_base=65536, channel_max=1024,
                               biline_channels=32, mapping_kwargs=dict(num_layers=8)).eval()
  g.synthesis.block0.use_fp16 = g.synthesis.block1.use_fp16 = False
  return lambda z: g(z, torch.zeros([z.shape[0], 0]))


def build_rosinality(repo, res, kind):
  sys.path.insert(0, os.path.join(_HERE, "..", "official_parity"))
  from make_import_fixtures import install_op_shim  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, repo)
  with tempfile.TemporaryDirectory(prefix="gen_synth_op_shim_") as tmp:
    install_op_shim(tmp)                 # ahead of the repo's own CUDA-only `op`
    import model as model_pkg  # pylint: disable=g-import-not-at-top
    import tensor_transforms as tt  # pylint: disable=g-import-not-at-top
  if kind == "pixelfolder":
    g = model_pkg.PixelFolder(size=res, style_dim=512, n_mlp=8, channel_multiplier=2).eval()
  else:
    g = model_pkg.CIPSskip(size=res, hidden_size=512, style_dim=512, n_mlp=8,
                           channel_multiplier=2).eval()
  return lambda z: g(tt.convert_to_coord_format(z.shape[0], res, res), [z])[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--official_repo", required=True)
  parser.add_argument("--model", choices=["creps", "pixelfolder", "cips"], default="creps")
  parser.add_argument("--res", type=int, default=256)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  t_start = time.perf_counter()
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  repo = os.path.abspath(args.official_repo)
  generate = (build_creps(repo, args.res) if args.model == "creps"
              else build_rosinality(repo, args.res, args.model))
  z = torch.randn(args.batch, 512)
  with torch.no_grad():
    img = generate(z)
    assert tuple(img.shape) == (args.batch, 3, args.res, args.res), img.shape
    startup = time.perf_counter() - t_start
    times = []
    for _ in range(args.reps):
      t = time.perf_counter()
      generate(z)
      times.append(time.perf_counter() - t)
  a = torch.randn(2048, 2048)
  a @ a
  gemm = []
  for _ in range(5):
    t = time.perf_counter()
    a @ a
    gemm.append(time.perf_counter() - t)
  print(json.dumps({
      "impl": "official", "model": args.model, "res": args.res, "batch": args.batch,
      "dtype": "float32", "torch": torch.__version__, "threads": torch.get_num_threads(),
      "s_per_img": float(np.median(times)) / args.batch, "s_all": times, "startup_s": startup,
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "torch_gemm_gflops": 2 * 2048 ** 3 / min(gemm) / 1e9}))


if __name__ == "__main__":
  main()
