"""Tests of gen_synth.evaluation: FID/KID maths, SWD, FID Inception, loading.

Run: python -m pytest -q -x tests/test_evaluation.py  (about a minute on 2 cores).
"""

import os

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.stats

from gen_synth.evaluation import evaluator
from gen_synth.evaluation import inception
from gen_synth.evaluation import metrics
from gen_synth.evaluation import swd


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


def _random_spd(rng, d, scale=1.0):
  a = rng.standard_normal((d, d)) * scale
  return a @ a.T / d + 0.1 * np.eye(d)


def _synthetic_images(n, seed, size=64):
  """Random coloured rectangles (sharp edges) plus pixel noise, uint8."""
  rng = np.random.default_rng(seed)
  x = np.zeros((n, size, size, 3), np.float32) + rng.uniform(0, 255,
                                                             (n, 1, 1, 3))
  for i in range(n):
    for _ in range(6):
      y0, x0 = rng.integers(0, size - 8, 2)
      h, w = rng.integers(4, size // 2, 2)
      x[i, y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, 3)
  x += rng.normal(0, 8, x.shape)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _blur(images, sigma):
  if sigma == 0:
    return images
  out = scipy.ndimage.gaussian_filter(images.astype(np.float32),
                                      (0, sigma, sigma, 0))
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def random_weights_npz(tmp_path_factory):
  """An .npz with the published names/shapes and random values."""
  path = tmp_path_factory.mktemp("inception") / "inception_random.npz"
  np.savez(path, **inception.random_state_dict(seed=0))
  return str(path)


# ----------------------------------------------------------------------------
# FID.
# ----------------------------------------------------------------------------


def test_frechet_distance_matches_eigenvalue_reference():
  rng = np.random.default_rng(0)
  d = 24
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d, 2.0)
  # Independent reference: Tr((S1 S2)^1/2) = sum sqrt(eig(S1 S2)); S1 S2 is
  # similar to the SPD matrix S1^1/2 S2 S1^1/2, so its eigenvalues are > 0.
  r1 = scipy.linalg.sqrtm(s1).real
  tr_covmean = np.sum(np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1)))
  expected = (np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2)
              - 2 * tr_covmean)
  got = metrics.frechet_distance(mu1, s1, mu2, s2)
  # Both sides in float64; sqrtm/eigh agree to ~1e-10 relative here.
  np.testing.assert_allclose(got, expected, rtol=1e-8)
  assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(
      0.0, abs=1e-8)


def test_frechet_distance_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(1)
  d = 16
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(v1) - np.sqrt(v2))**2)
  got = metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
  np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_feature_stats_streaming_equals_numpy_mean_cov():
  rng = np.random.default_rng(2)
  feats = (rng.standard_normal((300, 8)) * 3 + 100).astype(np.float32)
  stats = metrics.FeatureStats(8, keep_features=True)
  for start in range(0, 300, 64):  # uneven last batch
    stats.add(feats[start:start + 64])
  mu, cov = stats.mean_cov()
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-12)
  # Large mean (100) vs unit-scale covariance: float64 accumulators keep the
  # cancellation error ~1e-10 relative.
  np.testing.assert_allclose(cov, np.cov(feats.astype(np.float64),
                                         rowvar=False), rtol=1e-7, atol=1e-9)
  np.testing.assert_array_equal(stats.all_features(), feats)


# ----------------------------------------------------------------------------
# KID.
# ----------------------------------------------------------------------------


def _kid_reference_full(x, y):
  """Unbiased MMD^2 with k=(a.b/d+1)^3 over all pairs, written with loops."""
  d = x.shape[1]
  k = lambda a, b: (np.dot(a, b) / d + 1.0)**3  # noqa: E731
  m = len(x)
  kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return (kxx + kyy) / (m * (m - 1)) - 2 * kxy / (m * m)


def test_kid_equals_loop_reference_when_subset_is_everything():
  rng = np.random.default_rng(3)
  x = np.abs(rng.standard_normal((40, 6)))
  y = np.abs(rng.standard_normal((40, 6))) + 0.3
  # One subset of all 40 points: the subset choice is a permutation, which
  # leaves the estimate unchanged, so it must equal the all-pairs formula.
  got = metrics.kernel_inception_distance(x, y, num_subsets=1,
                                          max_subset_size=1000)
  np.testing.assert_allclose(got, _kid_reference_full(y, x), rtol=1e-10)


def test_kid_self_near_zero_and_grows_with_shift():
  rng = np.random.default_rng(4)
  d = 64
  real = np.abs(rng.standard_normal((600, d)))  # nonnegative, like pool3
  other = np.abs(rng.standard_normal((600, d)))  # same distribution
  kw = dict(num_subsets=20, max_subset_size=300, seed=0)
  kid_self = metrics.kernel_inception_distance(real, real, **kw)
  kid_same_dist = metrics.kernel_inception_distance(real, other, **kw)
  shifts = [0.1, 0.2, 0.4, 0.8]
  kids = [metrics.kernel_inception_distance(real, other + s, **kw)
          for s in shifts]
  # Tolerance: kernel values here are 4.4 +- 0.8; the unbiased estimate with
  # 20 subsets of 300 scatters by ~0.01 around 0 (measured: -0.012 for the set
  # with itself, -0.001 for a second sample). 0.02 is 0.5 % of the kernel mean;
  # a 0.1 shift gives ~0.18.
  tol = 0.02
  assert abs(kid_self) < tol, kid_self
  assert abs(kid_same_dist) < tol, kid_same_dist
  assert kids[0] > 5 * tol, kids
  assert all(a < b for a, b in zip(kids, kids[1:])), kids


# ----------------------------------------------------------------------------
# SWD.
# ----------------------------------------------------------------------------


def _pyr_down_reference(x):
  """scipy.ndimage mirror-mode 5x5 binomial, then ::2 (NHWC float)."""
  k1 = np.array([1, 4, 6, 4, 1], np.float64) / 16
  k = np.outer(k1, k1)[None, :, :, None]
  return scipy.ndimage.convolve(x, k, mode="mirror")[:, ::2, ::2]


def test_laplacian_pyramid_matches_scipy_and_reconstructs():
  x = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3))
  np.testing.assert_allclose(
      np.asarray(swd.pyr_down(x.astype(np.float32))), _pyr_down_reference(x),
      rtol=1e-5, atol=1e-3)  # float32 vs float64 on 0..255 values
  pyr = swd.laplacian_pyramid(x.astype(np.float32), 3)
  assert [p.shape[1] for p in pyr] == [32, 16, 8]
  rec = pyr[-1]
  for level in pyr[-2::-1]:
    rec = swd.pyr_up(rec) + level
  np.testing.assert_allclose(np.asarray(rec), x, atol=1e-3)


def test_sliced_wasserstein_basic_properties():
  rng = np.random.default_rng(6)
  a = rng.standard_normal((500, 5)).astype(np.float32)
  key = jax.random.key(0)
  # Same points in another order: exactly 0 (projections are sorted).
  assert swd.sliced_wasserstein(a, a[rng.permutation(500)], key) == 0.0
  # In 1-D every direction is +-1: equals the 1-D Wasserstein-1 distance.
  u = rng.standard_normal((500, 1)).astype(np.float32)
  v = (rng.standard_normal((500, 1)) * 2 + 1).astype(np.float32)
  np.testing.assert_allclose(
      swd.sliced_wasserstein(u, v, key),
      scipy.stats.wasserstein_distance(u[:, 0], v[:, 0]), rtol=1e-5)


def test_swd_synthetic_identical_small_and_blur_ordered():
  a, b = _synthetic_images(64, 0), _synthetic_images(64, 1)
  self_dist = swd.sliced_wasserstein_distance(a, a, seed=0)["swd"]
  d = [swd.sliced_wasserstein_distance(a, _blur(b, s), seed=0)
       for s in (0, 1, 2)]
  assert set(d[0]) == {"swd_64", "swd_32", "swd_16", "swd"}
  # Identical sets only differ by the independent patch positions of the two
  # sets (ProGAN): the floor must be far below the effect of a sigma=1 blur.
  assert self_dist < 0.5 * d[1]["swd"], (self_dist, d)
  assert d[0]["swd"] < d[1]["swd"] < d[2]["swd"], d
  # The blur acts on the finest level most.
  assert d[0]["swd_64"] < d[1]["swd_64"] < d[2]["swd_64"], d


def test_swd_real_faces_identical_small_and_blur_ordered(shared_data_dir):
  faces = np.load(shared_data_dir / "faces_64_holdout.npz")["holdout"]
  a, b = faces[:200], faces[200:400]  # disjoint halves of the holdout
  self_dist = swd.sliced_wasserstein_distance(a, a, seed=0)["swd"]
  d = [swd.sliced_wasserstein_distance(a, _blur(b, s), seed=0)["swd"]
       for s in (0, 1, 2)]
  assert self_dist < 0.5 * d[1], (self_dist, d)
  assert d[0] < d[1] < d[2], d


# ----------------------------------------------------------------------------
# Inception.
# ----------------------------------------------------------------------------


def test_published_table_is_complete_and_counts_parameters():
  table = inception.published_tensor_shapes()
  assert len(table) == 94 * 5 + 2  # 94 conv+BN units, fc weight/bias
  n_params = sum(int(np.prod(s)) for k, s in table.items()
                 if "running_" not in k)
  assert n_params == inception.NUM_PUBLISHED_PARAMETERS
  assert table["Mixed_7c.branch3x3_2a.conv.weight"] == (384, 384, 1, 3)
  assert table["fc.weight"] == (1008, 2048)


def test_resize_equals_torch_bilinear_align_corners_false():
  """jax resize == F.interpolate(bilinear, align_corners=False) formula."""
  rng = np.random.default_rng(7)
  img = rng.uniform(0, 1, (1, 23, 17, 3)).astype(np.float32)

  def torch_axis(n_in, n_out):  # PyTorch's source index computation
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0

  y0, y1, wy = torch_axis(23, 299)
  x0, x1, wx = torch_axis(17, 299)
  rows = (img[:, y0] * (1 - wy)[None, :, None, None]
          + img[:, y1] * wy[None, :, None, None])
  ref = (rows[:, :, x0] * (1 - wx)[None, None, :, None]
         + rows[:, :, x1] * wx[None, None, :, None])
  got = np.asarray(inception.preprocess(img))
  np.testing.assert_allclose(got, 2 * ref - 1, atol=1e-5)


def test_random_weights_file_loads_completely_and_gives_2048_features(
    random_weights_npz):
  variables = inception.load_inception_variables(random_weights_npz)
  n_vars = len(jax.tree.leaves(variables))
  assert n_vars == 94 * 5 + 2  # each published tensor became one variable
  feature_fn = inception.make_feature_fn(variables, batch_size=2)
  images = np.random.default_rng(8).integers(0, 256, (2, 64, 64, 3),
                                             dtype=np.uint8)
  feats = feature_fn(images)
  assert feats.shape == (2, inception.FEATURE_DIM)
  assert feats.dtype == np.float32
  assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # mean of ReLUs
  assert not np.allclose(feats[0], feats[1])


@pytest.mark.parametrize("corruption", ["missing", "extra", "misshaped"])
def test_corrupted_weights_file_is_rejected(tmp_path, corruption):
  state = inception.random_state_dict(seed=1)
  name = "Mixed_6c.branch7x7dbl_3.conv.weight"
  if corruption == "missing":
    del state[name]
  elif corruption == "extra":
    name = "AuxLogits.fc.weight"
    state[name] = np.zeros((1008, 768), np.float32)
  else:
    state[name] = state[name].transpose(0, 1, 3, 2)  # 1x7 -> 7x1
  expected = {"missing": "1 missing", "extra": "1 unexpected",
              "misshaped": "1 misshaped"}[corruption]
  path = tmp_path / "bad.npz"
  np.savez(path, **state)
  with pytest.raises(ValueError, match=expected) as err:
    inception.load_inception_variables(str(path))
  assert name in str(err.value)
  assert inception.FID_WEIGHTS_URL in str(err.value)


def test_num_batches_tracked_entries_are_ignored(tmp_path):
  state = inception.random_state_dict(seed=2)
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0, np.int64)
  path = tmp_path / "with_counter.npz"
  np.savez(path, **state)
  variables = inception.load_inception_variables(str(path))
  assert len(jax.tree.leaves(variables)) == 94 * 5 + 2


def test_missing_weights_give_the_clear_message(tmp_path):
  for path in (None, str(tmp_path / "nope.npz")):
    with pytest.raises(inception.MissingInceptionWeightsError) as err:
      inception.load_inception_variables(path)
    msg = str(err.value)
    assert inception.FID_WEIGHTS_URL in msg
    assert "gen_synth.evaluation.convert_inception" in msg
    assert "swd" in msg and "KID" in msg


def test_pth_without_torch_explains_conversion(tmp_path):
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    pytest.skip("torch is installed: .pth files are read directly")
  except ImportError:
    pass
  path = tmp_path / inception.FID_WEIGHTS_FILENAME
  path.write_bytes(b"not really a pickle")
  with pytest.raises(ImportError, match="convert_inception"):
    inception.load_inception_variables(str(path))


def test_flax_network_equals_pytorch_fid(monkeypatch):
  torch = pytest.importorskip("torch")
  pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")
  state = inception.random_state_dict(seed=3)
  torch_state = {k: torch.from_numpy(v) for k, v in state.items()}
  # pytorch-fid downloads its weights; hand it the random state dict instead
  # (load_state_dict is strict, so this also checks the published table).
  monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url",
                      lambda *args, **kwargs: torch_state)
  net = pytorch_fid_inception.InceptionV3([3]).eval()
  images = np.random.default_rng(9).uniform(0, 1, (2, 64, 64, 3)).astype(
      np.float32)
  with torch.no_grad():
    ref = net(torch.from_numpy(images).permute(0, 3, 1, 2))[0]
  ref = ref.numpy().reshape(2, -1)
  variables = inception.state_dict_to_variables(state)
  got = np.asarray(inception.FIDInceptionV3().apply(variables, images)["pool3"])
  # float32 through 94 conv layers in two libraries: differences ~1e-6
  # relative; allow 1e-4 of the feature scale.
  np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


# ----------------------------------------------------------------------------
# compute_metrics.
# ----------------------------------------------------------------------------


def _generator_from(images):
  def generate_fn(num, seed, batch_size):
    del seed
    for start in range(0, num, batch_size):
      yield images[start:min(start + batch_size, num)]
  return generate_fn


def test_compute_metrics_missing_weights_fails_before_generating():
  config = evaluator.default_eval_config()

  def generate_fn(num, seed, batch_size):
    raise AssertionError("must not generate when weights are missing")

  for names in (["fid10k"], ["kid", "swd"]):
    with pytest.raises(inception.MissingInceptionWeightsError,
                       match="only the weight-free 'swd'"):
      evaluator.compute_metrics(names, generate_fn=generate_fn,
                                real_images_fn=lambda: None, num_generated=8,
                                eval_config=config, seed=0)


def test_compute_metrics_swd_only():
  real = _synthetic_images(64, 10)
  fake = _blur(_synthetic_images(64, 11), 2)
  config = evaluator.default_eval_config()
  out = evaluator.compute_metrics("swd", generate_fn=_generator_from(fake),
                                  real_images_fn=lambda: real,
                                  num_generated=64, eval_config=config, seed=3)
  direct = swd.sliced_wasserstein_distance(real, fake, seed=3)
  assert out == direct  # same seed -> same patches and directions
  other_seed = swd.sliced_wasserstein_distance(real, fake, seed=4)
  assert other_seed != direct


def test_compute_metrics_fid_kid_and_cache(tmp_path, random_weights_npz,
                                           monkeypatch):
  """Plumbing: the statistics handed to the Fréchet distance, KID, caching.

  `frechet_distance` itself is tested above; here it is replaced by a recorder
  because sqrtm of a 2048x2048 matrix takes ~40 s on this shared CPU.
  """
  calls = []

  def recording_frechet(mu1, sigma1, mu2, sigma2):
    calls.append((mu1, sigma1, mu2, sigma2))
    return float(len(calls))

  monkeypatch.setattr(metrics, "frechet_distance", recording_frechet)
  rng = np.random.default_rng(12)
  real = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  fake = np.clip(real.astype(int) + rng.integers(-60, 60, real.shape), 0,
                 255).astype(np.uint8)
  config = evaluator.default_eval_config()
  config.inception_path = random_weights_npz
  config.cache_dir = str(tmp_path / "cache")
  config.dataset_name = "toy"
  config.batch_size = 3  # batches straddle the FID snapshot at 4 images
  config.inception_batch_size = 4
  config.kid.num_subsets = 3
  out = evaluator.compute_metrics(
      ["fid4", "fid", "kid"], generate_fn=_generator_from(fake),
      real_images_fn=lambda: real, num_generated=8, eval_config=config,
      seed=0)
  assert set(out) == {"fid4", "fid", "kid"}
  # Independent recomputation from the features (whole-set batch).
  feature_fn = inception.make_feature_fn(
      inception.load_inception_variables(random_weights_npz), batch_size=8)
  fr, ff = feature_fn(real), feature_fn(fake)
  assert len(calls) == 2
  for (mu_g, sig_g, mu_r, sig_r), n in zip(calls, (4, 8)):
    # float32 network, float64 statistics: features agree to ~1e-6 relative.
    np.testing.assert_allclose(mu_g, ff[:n].mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sig_g, np.cov(ff[:n], rowvar=False),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(mu_r, fr.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sig_r, np.cov(fr, rowvar=False), rtol=1e-3,
                               atol=1e-3)
  np.testing.assert_allclose(
      out["kid"], metrics.kernel_inception_distance(
          fr, ff, num_subsets=3, seed=0), rtol=1e-3)
  cached = metrics.reference_stats_path(config.cache_dir, "toy", 32, None)
  assert os.path.exists(cached)

  def no_reals():
    raise AssertionError("reference statistics must come from the cache")

  again = evaluator.compute_metrics(
      ["fid", "kid"], generate_fn=_generator_from(fake),
      real_images_fn=no_reals, num_generated=8, eval_config=config, seed=0)
  np.testing.assert_allclose(calls[-1][2], calls[1][2], rtol=1e-12)
  np.testing.assert_allclose(calls[-1][3], calls[1][3], rtol=1e-12)
  np.testing.assert_allclose(again["kid"], out["kid"], rtol=1e-6)


def test_parse_metric_name():
  assert evaluator.parse_metric_name("fid50k", 100) == ("fid", 50000)
  assert evaluator.parse_metric_name("FID10k", 100) == ("fid", 10000)
  assert evaluator.parse_metric_name("fid2048", 100) == ("fid", 2048)
  assert evaluator.parse_metric_name("kid", 100) == ("kid", 100)
  with pytest.raises(ValueError, match="Unknown metric"):
    evaluator.parse_metric_name("is50k", 100)
