"""Inception-feature metrics: streaming statistics, FID, KID, reference cache.

* `FeatureStats` accumulates N, the feature sum and the sum of outer products
  in float64 (streaming; memory O(D^2) whatever N) and can also keep the raw
  features (needed by KID).
* `frechet_distance`: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) with
  `scipy.linalg.sqrtm`, as pytorch-fid (covariances unbiased, N - 1).
* `kernel_inception_distance`: unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / D + 1)^3, averaged over random subsets as in the
  StyleGAN2-ADA implementation (100 subsets of min(1000, N_real, N_gen)).
* Reference statistics of a dataset are cached as `.npz` files keyed by
  dataset name, resolution and number of images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any

import numpy as np
import scipy.linalg


@dataclasses.dataclass
class FeatureStats:
  """Streaming feature statistics (host-side numpy, float64 accumulators).

  Attributes:
    num: number of feature vectors added.
    total: [D] float64 sum of the features.
    total_outer: [D, D] float64 sum of x x^T.
    features: kept raw float32 feature batches (only if `keep_features`).
  """
  dim: int
  keep_features: bool = False
  num: int = 0
  total: np.ndarray | None = None
  total_outer: np.ndarray | None = None
  features: list[np.ndarray] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.total is None:
      self.total = np.zeros([self.dim], np.float64)
    if self.total_outer is None:
      self.total_outer = np.zeros([self.dim, self.dim], np.float64)

  def add(self, feats: np.ndarray) -> None:
    """Adds a batch of features [b, D]."""
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[1] != self.dim:
      raise ValueError(f"expected features [b, {self.dim}], got {feats.shape}")
    f64 = feats.astype(np.float64)
    self.num += feats.shape[0]
    self.total += f64.sum(axis=0)
    self.total_outer += f64.T @ f64
    if self.keep_features:
      self.features.append(feats.astype(np.float32))

  def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (divides by N - 1)."""
    if self.num < 2:
      raise ValueError(f"need at least 2 feature vectors, have {self.num}")
    mu = self.total / self.num
    cov = (self.total_outer - self.num * np.outer(mu, mu)) / (self.num - 1)
    return mu, cov

  def all_features(self) -> np.ndarray:
    """[N, D] float32 raw features (needs keep_features=True)."""
    if not self.keep_features:
      raise ValueError("FeatureStats was created with keep_features=False")
    if not self.features:
      return np.zeros([0, self.dim], np.float32)
    return np.concatenate(self.features)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """Fréchet distance of two Gaussians N(mu1, sigma1), N(mu2, sigma2).

  Args:
    mu1, mu2: [D] means.
    sigma1, sigma2: [D, D] covariances.
    eps: diagonal offset added to both covariances when the product is
      singular (sqrtm not finite), as pytorch-fid does.

  Returns:
    ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)).
  """
  mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(
      np.float64)
  sigma1 = np.atleast_2d(sigma1).astype(np.float64)
  sigma2 = np.atleast_2d(sigma2).astype(np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError("mean/covariance shapes differ: "
                     f"{mu1.shape} {mu2.shape} {sigma1.shape} {sigma2.shape}")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    # Numerical noise gives tiny imaginary parts; a large one means failure.
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError("sqrtm(sigma1 sigma2) has a large imaginary part "
                       f"({np.max(np.abs(covmean.imag)):.3g})")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * np.trace(covmean))


def kernel_inception_distance(real: np.ndarray, gen: np.ndarray, *,
                              num_subsets: int = 100,
                              max_subset_size: int = 1000,
                              seed: int = 0) -> float:
  """Unbiased KID (MMD^2, cubic polynomial kernel) over random subsets.

  Args:
    real: [Nr, D] features of real images.
    gen: [Ng, D] features of generated images.
    num_subsets: number of random subset pairs (StyleGAN2-ADA: 100).
    max_subset_size: subset size m = min(max_subset_size, Nr, Ng) (1000).
    seed: seed of the subset choice (numpy Generator).

  Returns:
    Mean over subsets of the unbiased MMD^2 estimate
    [sum_{i!=j} k(x_i,x_j) + k(y_i,y_j)] / (m (m-1)) - 2 mean_{i,j} k(x_i, y_j)
    with k(a, b) = (a.b / D + 1)^3. Can be slightly negative.
  """
  real = np.asarray(real, np.float64)
  gen = np.asarray(gen, np.float64)
  n = real.shape[1]
  m = min(real.shape[0], gen.shape[0], max_subset_size)
  if m < 2:
    raise ValueError("KID needs at least 2 real and 2 generated features")
  rng = np.random.default_rng(seed)
  t = 0.0
  for _ in range(num_subsets):
    x = gen[rng.choice(gen.shape[0], m, replace=False)]
    y = real[rng.choice(real.shape[0], m, replace=False)]
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
  return float(t / num_subsets / m)


# ----------------------------------------------------------------------------
# Reference statistics cache.
# ----------------------------------------------------------------------------


def file_fingerprint(path: str) -> str:
  """sha256 (first 16 hex digits) of a file, e.g. of the Inception weights."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:16]


def reference_stats_path(cache_dir: str, dataset_name: str, resolution: int,
                         num_images: int | None) -> str:
  """`<cache_dir>/<dataset>_<res>px_<num|all>img_inception2015.npz`."""
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset_name)
  count = "all" if num_images is None else str(int(num_images))
  return os.path.join(cache_dir,
                      f"{safe}_{int(resolution)}px_{count}img_inception2015.npz")


def save_reference_stats(path: str, stats: FeatureStats, *,
                         weights_fingerprint: str) -> None:
  """Writes mean, covariance and (if kept) raw features atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  mu, sigma = stats.mean_cov()
  arrays: dict[str, Any] = dict(mu=mu, sigma=sigma, num=np.int64(stats.num),
                                weights=np.array(weights_fingerprint))
  if stats.keep_features:
    arrays["features"] = stats.all_features()
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_reference_stats(path: str, *, weights_fingerprint: str,
                         need_features: bool) -> dict[str, np.ndarray] | None:
  """Cached {'mu', 'sigma', 'num'[, 'features']} or None if absent/stale."""
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as data:
    if str(data["weights"]) != weights_fingerprint:
      return None
    if need_features and "features" not in data.files:
      return None
    return {k: data[k] for k in data.files}
