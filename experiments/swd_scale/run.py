r"""SWD scale on real faces: train vs holdout, blurred and noised holdout.

  python experiments/swd_scale/run.py --data_dir=../shared/data --num_images=810

Decodes the zip's `train/` members with the data README recipe (Pillow,
crop (15, 35, 163, 183), LANCZOS to 64x64), takes the first `num_images`, and
compares them with `faces_64_holdout.npz` (810 images) as they are, blurred
(Gaussian sigma 1, 2 px) and noised (Gaussian sigma 0.05, 0.1 in [0, 1] units).
Prints a markdown table (SWD x 1e3 per level and average, ProGAN protocol).
"""

import io
import os
import time
import zipfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import scipy.ndimage

from gen_synth.evaluation import swd

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "Data folder.")
_NUM = flags.DEFINE_integer("num_images", 810, "Images per set.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "SWD seeds (averaged).")


def load_train(zip_path, num):
  """First `num` train faces, [num, 64, 64, 3] uint8 (README recipe)."""
  with zipfile.ZipFile(zip_path) as z:
    names = sorted(n for n in z.namelist() if n.startswith("train/"))[:num]
    return np.stack([
        np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")
                   .crop((15, 35, 163, 183)).resize((64, 64), Image.LANCZOS),
                   dtype=np.uint8) for n in names])


def blur(x, sigma):
  y = scipy.ndimage.gaussian_filter(x.astype(np.float32), (0, sigma, sigma, 0))
  return np.clip(np.round(y), 0, 255).astype(np.uint8)


def noise(x, sigma, seed=0):
  rng = np.random.default_rng(seed)
  y = x.astype(np.float32) / 255 + rng.normal(0, sigma, x.shape)
  return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


def main(argv):
  del argv
  train = load_train(os.path.join(_DATA_DIR.value, "celeba_align_6000.zip"),
                     _NUM.value)
  hold = np.load(os.path.join(_DATA_DIR.value,
                              "faces_64_holdout.npz"))["holdout"]
  n = min(len(train), len(hold))
  train, hold = train[:n], hold[:n]
  variants = [
      ("train vs train (same images; patch-sampling floor)", train),
      ("train vs holdout", hold),
      ("train vs holdout, Gaussian blur sigma=1 px", blur(hold, 1)),
      ("train vs holdout, Gaussian blur sigma=2 px", blur(hold, 2)),
      ("train vs holdout + noise sigma=0.05", noise(hold, 0.05)),
      ("train vs holdout + noise sigma=0.1", noise(hold, 0.1)),
  ]
  seeds = [int(s) for s in _SEEDS.value]
  print(f"{n} images per set, seeds {seeds} (mean +- std over seeds)\n")
  print("| comparison | SWD 64 | SWD 32 | SWD 16 | SWD avg |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for name, other in variants:
    t0 = time.time()
    rs = [swd.sliced_wasserstein_distance(train, other, seed=s) for s in seeds]
    cells = []
    for key in ("swd_64", "swd_32", "swd_16", "swd"):
      v = np.array([r[key] for r in rs])
      cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
    print(f"| {name} | " + " | ".join(cells) + f" |  <!-- {time.time()-t0:.0f} s -->",
          flush=True)


if __name__ == "__main__":
  app.run(main)
