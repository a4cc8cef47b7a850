"""One entry point for evaluation: `compute_metrics`, used by training and CLI.

Metric names:
  'fid50k', 'fid10k', 'fid<N>' / 'fid<N>k': FID with N generated images
      against the reference statistics of all real images (or
      `eval_config.num_real`); 'fid' uses `num_generated` images.
  'kid': unbiased KID with `num_generated` generated images.
  'swd': multi-scale SWD x 1e3 (ProGAN) on min(num_generated, N_real) images
      of each set; also returns 'swd_<res>' for each pyramid level.
FID and KID need the Inception weights (`eval_config.inception_path`); 'swd'
needs none. It is independent of the model code: images come from callables.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterable, Iterator

from absl import logging
import ml_collections
import numpy as np

from gen_synth.evaluation import inception
from gen_synth.evaluation import metrics
from gen_synth.evaluation import swd as swd_lib

GenerateFn = Callable[[int, int, int], Iterable[np.ndarray]]
RealImagesFn = Callable[[], "np.ndarray | Iterable[np.ndarray]"]


def default_eval_config() -> ml_collections.ConfigDict:
  """Evaluation defaults (`config.eval`); CPU-friendly: SWD only."""
  c = ml_collections.ConfigDict()
  c.every_steps = 5000  # periodic evaluation during training (0: never)
  # Comma-separated. On CPU 'swd' (weight-free); with weights e.g. 'fid,kid,swd'
  # (small-N, `num_samples` images); accelerators: 'fid50k,kid,swd'.
  c.metrics = "swd"
  c.num_samples = 2048  # generated images for 'fid', 'kid', 'swd'
  c.inception_path = ml_collections.config_dict.placeholder(str)  # .npz/.pth
  c.cache_dir = ml_collections.config_dict.placeholder(str)  # reference stats
  c.dataset_name = ml_collections.config_dict.placeholder(str)  # cache key
  c.num_real = ml_collections.config_dict.placeholder(int)  # None: all reals
  c.batch_size = 32  # generation batch size
  c.inception_batch_size = 32
  c.kid = ml_collections.ConfigDict(dict(num_subsets=100, max_subset_size=1000))
  c.swd = ml_collections.ConfigDict(dict(
      nhoods_per_image=128, nhood_size=7, dir_repeats=4, dirs_per_repeat=128,
      min_resolution=16, batch_size=64))
  return c


def parse_metric_name(name: str, num_generated: int) -> tuple[str, int]:
  """'fid50k' -> ('fid', 50000); 'fid' / 'kid' / 'swd' -> (kind, num_generated)."""
  name = name.strip().lower()
  if name in ("fid", "kid", "swd"):
    return name, int(num_generated)
  m = re.fullmatch(r"fid(\d+)(k?)", name)
  if m:
    return "fid", int(m.group(1)) * (1000 if m.group(2) else 1)
  raise ValueError(f"Unknown metric {name!r}: expected 'fid50k', 'fid10k', "
                   "'fid<N>[k]', 'fid', 'kid' or 'swd'.")


def _batches(images, batch_size: int) -> Iterator[np.ndarray]:
  """Array [N, H, W, C] or iterable of batches -> iterator of uint8 batches."""
  if isinstance(images, np.ndarray) or hasattr(images, "shape"):
    images = np.asarray(images)
    for start in range(0, images.shape[0], batch_size):
      yield images[start:start + batch_size]
  else:
    for batch in images:
      yield np.asarray(batch)


def _take(batches: Iterable[np.ndarray], num: int | None
          ) -> Iterator[np.ndarray]:
  """The first `num` images (all if None) of a batch stream."""
  seen = 0
  for batch in batches:
    if num is not None:
      batch = batch[:num - seen]
    if batch.shape[0]:
      yield batch
    seen += batch.shape[0]
    if num is not None and seen >= num:
      return


def _check_images(batch: np.ndarray, what: str) -> None:
  if batch.ndim != 4 or batch.shape[-1] not in (1, 3) or batch.dtype != np.uint8:
    raise ValueError(f"{what} must be uint8 [b, H, W, 3] batches, got "
                     f"{batch.dtype} {batch.shape}")


def _real_reference(real_images_fn: RealImagesFn, feature_fn, resolution: int,
                    eval_config, weights_path: str, need_features: bool
                    ) -> dict[str, np.ndarray]:
  """Inception statistics of the real images, from / into the cache."""
  cache_path = None
  fingerprint = metrics.file_fingerprint(weights_path)
  if eval_config.cache_dir and eval_config.dataset_name:
    cache_path = metrics.reference_stats_path(
        eval_config.cache_dir, eval_config.dataset_name, resolution,
        eval_config.num_real)
    cached = metrics.load_reference_stats(
        cache_path, weights_fingerprint=fingerprint,
        need_features=need_features)
    if cached is not None:
      logging.info("Reference statistics from %s (%d images).", cache_path,
                   int(cached["num"]))
      return cached
  stats = metrics.FeatureStats(inception.FEATURE_DIM,
                               keep_features=need_features)
  t0 = time.time()
  for batch in _take(_batches(real_images_fn(), eval_config.batch_size),
                     eval_config.num_real):
    _check_images(batch, "real images")
    if batch.shape[1:3] != (resolution, resolution):
      raise ValueError(f"real images are {batch.shape[1:3]}, generated "
                       f"{resolution}x{resolution}: use one resolution")
    stats.add(feature_fn(batch))
  logging.info("Reference statistics of %d real images in %.1f s.", stats.num,
               time.time() - t0)
  if eval_config.num_real is not None and stats.num < eval_config.num_real:
    raise ValueError(f"num_real={eval_config.num_real} but only {stats.num} "
                     "real images were given")
  if cache_path is not None:
    metrics.save_reference_stats(cache_path, stats,
                                 weights_fingerprint=fingerprint)
  mu, sigma = stats.mean_cov()
  out = dict(mu=mu, sigma=sigma, num=np.int64(stats.num))
  if need_features:
    out["features"] = stats.all_features()
  return out


def compute_metrics(metric_names: list[str] | str, *, generate_fn: GenerateFn,
                    real_images_fn: RealImagesFn, num_generated: int,
                    eval_config: ml_collections.ConfigDict, seed: int
                    ) -> dict[str, float]:
  """Computes the requested metrics of a generator against real images.

  Args:
    metric_names: e.g. ['fid50k', 'kid', 'swd'] or 'fid50k,kid,swd'.
    generate_fn: generate_fn(num, seed, batch_size) -> iterable of uint8
      [b, H, W, 3] generated batches, `num` images in all.
    real_images_fn: () -> uint8 [N, H, W, 3] array or iterable of batches.
    num_generated: generated images for 'fid', 'kid' and 'swd'.
    eval_config: see `default_eval_config()`.
    seed: seed of the generated images, KID subsets and SWD randomness.

  Returns:
    {metric name: value}, plus 'swd_<res>' per pyramid level for 'swd'.

  Raises:
    inception.MissingInceptionWeightsError: an Inception metric (FID/KID) is
      requested and `eval_config.inception_path` is missing.
  """
  if isinstance(metric_names, str):
    metric_names = [m for m in metric_names.split(",") if m.strip()]
  specs = {name.strip(): parse_metric_name(name, num_generated)
           for name in metric_names}
  if not specs:
    return {}
  needs_inception = any(kind in ("fid", "kid") for kind, _ in specs.values())
  need_kid = any(kind == "kid" for kind, _ in specs.values())
  feature_fn = None
  if needs_inception:  # Fail before generating anything.
    variables = inception.load_inception_variables(eval_config.inception_path)
    feature_fn = inception.make_feature_fn(
        variables, batch_size=eval_config.inception_batch_size)
  total = max(n for _, n in specs.values())
  fid_counts = sorted({n for kind, n in specs.values() if kind == "fid"})
  kid_count = max([n for kind, n in specs.values() if kind == "kid"], default=0)
  swd_count = max([n for kind, n in specs.values() if kind == "swd"], default=0)

  # One pass over the generated images: Inception statistics (snapshots at
  # each FID count), raw features for KID, pixels for SWD.
  gen_stats = metrics.FeatureStats(inception.FEATURE_DIM,
                                   keep_features=need_kid)
  fid_gen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
  swd_images: list[np.ndarray] = []
  resolution = None
  t0 = time.time()
  seen = 0
  for batch in _take(generate_fn(total, seed, eval_config.batch_size), total):
    _check_images(batch, "generate_fn output")
    resolution = resolution or batch.shape[1]
    if seen < swd_count:
      swd_images.append(batch[:swd_count - seen])
    if feature_fn is not None:
      start = 0
      while start < batch.shape[0]:  # split at the FID snapshot counts
        bounds = [n - seen for n in fid_counts if seen < n < seen + (
            batch.shape[0] - start)]
        stop = (bounds[0] if bounds else batch.shape[0] - start) + start
        stats_batch = batch[start:stop]
        gen_stats.add(feature_fn(stats_batch))
        seen += stats_batch.shape[0]
        start = stop
        if seen in fid_counts:
          fid_gen[seen] = gen_stats.mean_cov()
    else:
      seen += batch.shape[0]
  logging.info("Evaluated %d generated images in %.1f s.", seen,
               time.time() - t0)
  if seen < total:
    raise ValueError(f"generate_fn gave {seen} images, {total} requested")

  results: dict[str, float] = {}
  if feature_fn is not None:
    ref = _real_reference(real_images_fn, feature_fn, resolution, eval_config,
                          eval_config.inception_path, need_features=need_kid)
    for name, (kind, n) in specs.items():
      if kind == "fid":
        mu, sigma = fid_gen[n]
        results[name] = metrics.frechet_distance(mu, sigma, ref["mu"],
                                                 ref["sigma"])
      elif kind == "kid":
        results[name] = metrics.kernel_inception_distance(
            ref["features"], gen_stats.all_features()[:kid_count],
            num_subsets=eval_config.kid.num_subsets,
            max_subset_size=eval_config.kid.max_subset_size, seed=seed)
  if swd_count:
    gen = np.concatenate(swd_images)
    real = np.concatenate(list(_take(
        _batches(real_images_fn(), eval_config.batch_size), gen.shape[0])))
    n = min(gen.shape[0], real.shape[0])
    s = eval_config.swd
    out = swd_lib.sliced_wasserstein_distance(
        real[:n], gen[:n], seed=seed, num_images=n,
        nhoods_per_image=s.nhoods_per_image, nhood_size=s.nhood_size,
        dir_repeats=s.dir_repeats, dirs_per_repeat=s.dirs_per_repeat,
        min_resolution=s.min_resolution, batch_size=s.batch_size)
    for name, (kind, _) in specs.items():
      if kind == "swd":
        results[name] = out["swd"]
    results.update({k: v for k, v in out.items() if k != "swd"})
  return results
