"""Scale consistency (CREPS paper Table 3, §4.4): R renders vs 2R renders box-downsampled to R.

Protocol (as far as the paper describes it, details stated where it does not):
  1. latents z_k for seeds seed .. seed + num_images - 1 (`sampling.seed_latents`,
     as gen_images.py draws them), mapped with `truncation_psi`;
  2. set 1: the R x R render; set 2: the 2R x 2R render of the same ws, both in
     the given coordinate convention over the model's coordinate range;
  3. set 2 is downsampled to R with a 2 x 2 box filter (mean of each 2 x 2
     block) on the float output;
  4. both sets are quantised to uint8 as saved images are (x * 127.5 + 128,
     clipped, as gen_images.py) and compared as floats in [0, 1] (uint8 / 255)
     with `dm_pix.psnr` and `dm_pix.ssim` (11 x 11 Gaussian window, sigma 1.5,
     max_val 1, per channel then averaged); `quantize=False` compares the float
     outputs mapped to [0, 1] by (x + 1) / 2 and clipped instead;
  5. the per-image PSNR (dB; inf for identical images) and SSIM are averaged
     over the images.

Conventions: 'linspace' (official, i / (n - 1)) samples a 2R render at
positions that drift against the R render's by up to half an R pixel across the
image, so a random-init CREPS gives a finite PSNR. 'center' ((i + 0.5) / n) puts
the four 2R samples of a box symmetrically around the R sample, so the box mean
equals it up to the image's curvature over a quarter pixel: closer, but not
equal, because a box average of a non-linear function is not its value at the
centre.
"""

from typing import Optional

import dm_pix
import jax.numpy as jnp
import numpy as np

from gen_synth import sampling
from gen_synth.models import coords as coords_lib


def box_downsample(images, factor: int = 2):
  """[B, H, W, C] -> [B, H / factor, W / factor, C], mean over factor x factor blocks."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // factor, factor, w // factor, factor, c)
  return x.mean(axis=(2, 4))


def _to_unit(images, quantize: bool):
  if quantize:
    return jnp.asarray(sampling.to_uint8(images), jnp.float32) / 255.0
  return jnp.clip((jnp.asarray(images, jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def compare(a, b, quantize: bool = True):
  """Float images [B, H, W, 3] (about [-1, 1]) -> (psnr [B], ssim [B]) numpy."""
  a, b = _to_unit(a, quantize), _to_unit(b, quantize)
  return np.asarray(dm_pix.psnr(a, b)), np.asarray(dm_pix.ssim(a, b, max_val=1.0))


def scale_consistency(model, variables, num_images: int = 100, resolution: Optional[int] = None,
                      batch_size: int = 8, seed: int = 0, truncation_psi: float = 1.0,
                      coord_convention: Optional[str] = None, quantize: bool = True,
                      tile: Optional[int] = None, method: str = "box") -> dict:
  """PSNR / SSIM between R renders and box-downsampled 2R renders of the same latents.

  Args:
    model, variables: a pixel-independent generator and its variables
      (`sampling.load_generator`).
    num_images: images compared (the paper: 10k at R = 256).
    resolution: R (default `model.resolution`).
    batch_size: images per generator call.
    seed: first latent seed (seeds seed .. seed + num_images - 1).
    truncation_psi: truncation of the ws.
    coord_convention: 'linspace' or 'center' (default: the model's own).
    quantize: compare uint8-quantised images (default, as saved images) or floats.
    tile: render the 2R images in tiles of this size (bounds memory).
    method: 'box' (the protocol above) or 'point', a diagnostic that compares
      the R render with the samples of a denser render at exactly the same
      positions ('linspace': every 2nd pixel of a 2R - 1 render; 'center': the
      middle pixel of each 3 x 3 block of a 3R render), which is limited only
      by rounding for a pointwise generator.

  Returns:
    dict(psnr=mean dB (inf if every pair is identical), ssim=mean SSIM,
    psnr_min, ssim_min, num_images, resolution, convention, quantized,
    downsample='box2x2' or the point-sampling rule).
  """
  r = resolution or model.resolution
  convention = coord_convention or getattr(model, "coord_convention", "linspace")
  lo, hi = getattr(model, "coord_range", (0.0, 1.0))
  if method == "box":
    big, reduce, rule = 2 * r, box_downsample, "box2x2"
  elif method == "point" and convention == "linspace":
    big, reduce, rule = 2 * r - 1, lambda x: x[:, ::2, ::2], "point: [::2] of 2R-1"
  elif method == "point" and convention == "center":
    big, reduce, rule = 3 * r, lambda x: x[:, 1::3, 1::3], "point: [1::3] of 3R"
  else:
    raise ValueError(f"unknown method {method!r} / convention {convention!r}")
  coords = {n: coords_lib.axis_coords(n, convention, lo, hi) for n in (r, big)}
  z = sampling.seed_latents(range(seed, seed + num_images), model.z_dim)
  psnrs, ssims = [], []
  for s in range(0, num_images, batch_size):
    ws = sampling.map_latents(model, variables, z[s:s + batch_size], truncation_psi)
    small = sampling.render(model, variables, ws, r, r, rows=coords[r], cols=coords[r])
    large = sampling.render(model, variables, ws, big, big, tile=tile,
                            rows=coords[big], cols=coords[big])
    p, q = compare(small, reduce(large), quantize)
    psnrs.append(p)
    ssims.append(q)
  psnrs, ssims = np.concatenate(psnrs), np.concatenate(ssims)
  return dict(psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)),
              psnr_min=float(np.min(psnrs)), ssim_min=float(np.min(ssims)),
              num_images=int(num_images), resolution=int(r), convention=convention,
              quantized=bool(quantize), downsample=rule)
