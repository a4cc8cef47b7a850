"""Tests of the training input pipeline (`gen_synth.data`)."""

import json
import tempfile

import jax
import numpy as np
import pytest

from gen_synth import data

N_CROPS = 40  # Examples; batches of 8 cross the epoch boundary at 40.
RES = 16


@pytest.fixture(scope='module', autouse=True)
def _temp_files_in_tmp_path(tmp_path_factory):
  """tfds leaves an empty `tmp*tfds` folder per unprepared builder in the
  default temp dir; keep those inside pytest's tmp_path instead of /tmp."""
  with pytest.MonkeyPatch.context() as m:
    m.setattr(tempfile, 'tempdir', str(tmp_path_factory.mktemp('tempfile')))
    yield


@pytest.fixture(scope='module')
def demo_config(tmp_path_factory):
  """A tiny demo_photos config; the first pipeline auto-builds it."""
  c = data.default_data_config()
  c.data_dir = str(tmp_path_factory.mktemp('tfds'))
  c.resolution = RES
  c.num_demo_crops = N_CROPS
  c.demo_crop_size = 32
  c.seed = 7
  return c


@pytest.fixture(scope='module')
def reference(demo_config):
  """All examples in stored order, uint8 [N, R, R, 3] (auto-builds the demo)."""
  return data.load_images(demo_config)


def _with(config, **kw):
  c = config.copy_and_resolve_references()
  for k, v in kw.items():
    c[k] = v
  return c


def _batches(pipeline, n):
  with pipeline:
    return [np.asarray(next(pipeline)) for _ in range(n)]


def _to_uint8(x):
  """Inverse of the [-1, 1] scaling; checks x sits on the 256 levels."""
  u = np.round((x + 1.0) * 127.5)
  np.testing.assert_allclose(u / 127.5 - 1.0, x, rtol=0, atol=1e-6)
  return u.astype(np.uint8)


def test_scaling_end_points_are_exact():
  x = np.asarray(data._to_float(jax.numpy.arange(256, dtype=np.uint8)))
  assert x[0] == -1.0 and x[-1] == 1.0 and x.dtype == np.float32
  assert np.all(np.diff(x) > 0)


def test_default_config_fields():
  c = data.default_data_config()
  assert c.name == 'demo_photos' and c.split == 'train' and c.xflip
  for field in ('data_dir', 'source', 'resolution', 'crop_size', 'crop_box',
                'seed', 'num_demo_crops', 'demo_crop_size', 'prefetch'):
    assert field in c


def test_shape_dtype_range_and_content(demo_config, reference):
  p = data.InputPipeline(_with(demo_config, xflip=False), global_batch_size=8,
                         seed=3)
  assert p.num_examples == N_CROPS and p.resolution == RES
  with p:
    x = next(p)
  assert isinstance(x, jax.Array)
  assert x.shape == (8, RES, RES, 3) and x.dtype == np.float32
  x = np.asarray(x)
  assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5 < 0.5 < x.max()
  index, _ = data.sample_plan((7, 3), 0, 8, N_CROPS)
  np.testing.assert_array_equal(_to_uint8(x), reference[index])


def test_epoch_is_a_permutation():
  index, _ = data.sample_plan((1, 2), 0, 3 * 10, 10)
  for e in range(3):
    assert sorted(index[10 * e:10 * (e + 1)]) == list(range(10))
  assert not np.array_equal(index[:10], index[10:20])  # New order each epoch.
  # A window that straddles epochs equals the concatenation of the epochs.
  a, fa = data.sample_plan((1, 2), 7, 6, 10)
  np.testing.assert_array_equal(a, index[7:13])
  _, all_flips = data.sample_plan((1, 2), 0, 30, 10)
  np.testing.assert_array_equal(fa, all_flips[7:13])


def test_xflip(demo_config):
  plain = _batches(data.InputPipeline(_with(demo_config, xflip=False),
                                      global_batch_size=8), 5)
  flipped = _batches(data.InputPipeline(demo_config, global_batch_size=8), 5)
  n_flipped = n_same = 0
  for a, b in zip(plain, flipped):
    for x, y in zip(a, b):
      if np.array_equal(x, y):
        n_same += 1
      else:
        np.testing.assert_array_equal(y, np.flip(x, axis=1))  # [H, W, 3]
        n_flipped += 1
  assert n_flipped > 5 and n_same > 5  # 40 coins of probability 1/2.
  # With xflip=False every image is stored as is (checked against the source).
  _, flips = data.sample_plan((7, 0), 0, 40, N_CROPS)
  assert n_flipped == sum(
      not np.array_equal(x, np.flip(x, axis=1))
      for x, f in zip(np.concatenate(plain), flips) if f)


def test_two_processes_disjoint_and_cover_the_global_batch(demo_config):
  whole = _batches(data.InputPipeline(demo_config, global_batch_size=8), 3)
  parts = [_batches(data.InputPipeline(demo_config, global_batch_size=8,
                                       process_index=i, process_count=2), 3)
           for i in range(2)]
  for t in range(3):
    assert parts[0][t].shape == (4, RES, RES, 3)
    np.testing.assert_array_equal(
        np.concatenate([parts[0][t], parts[1][t]]), whole[t])
  # Disjoint example indices within an epoch.
  idx, _ = data.sample_plan((7, 0), 0, 40, N_CROPS)
  p0 = np.concatenate([idx[t * 8:t * 8 + 4] for t in range(5)])
  p1 = np.concatenate([idx[t * 8 + 4:t * 8 + 8] for t in range(5)])
  assert not set(p0) & set(p1) and len(set(p0) | set(p1)) == N_CROPS


def test_resume_continues_with_the_next_batch(demo_config):
  p = data.InputPipeline(demo_config, global_batch_size=8, seed=5)
  with p:
    for _ in range(6):  # Past the epoch boundary (40 examples).
      next(p)
    position = p.get_position()
    expected = [np.asarray(next(p)) for _ in range(2)]
  assert position == {'epoch': 1, 'index': 8}
  assert json.loads(json.dumps(position)) == position
  resumed = data.InputPipeline(demo_config, global_batch_size=8, seed=5,
                               position=position)
  got = _batches(resumed, 2)
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a, b)


def test_same_seed_agrees_other_seed_differs(demo_config):
  a = _batches(data.InputPipeline(demo_config, global_batch_size=8, seed=1), 2)
  b = _batches(data.InputPipeline(_with(demo_config, prefetch=0,
                                        num_workers=1),
                                  global_batch_size=8, seed=1), 2)
  c = _batches(data.InputPipeline(demo_config, global_batch_size=8, seed=2), 2)
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))


def test_sharded_global_batch(demo_config):
  devices = np.array(jax.devices())
  mesh = jax.sharding.Mesh(devices, ('data',))
  sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('data'))
  batch = 2 * len(devices)
  p = data.InputPipeline(demo_config, global_batch_size=batch,
                         sharding=sharding)
  with p:
    x = next(p)
  assert x.shape == (batch, RES, RES, 3) and x.sharding == sharding
  plain = _batches(data.InputPipeline(demo_config, global_batch_size=batch), 1)
  np.testing.assert_array_equal(np.asarray(x), plain[0])


def test_bad_arguments(demo_config):
  with pytest.raises(ValueError, match='multiple of process_count'):
    data.InputPipeline(demo_config, global_batch_size=5, process_index=0,
                       process_count=2)
  with pytest.raises(ValueError, match='outside the dataset'):
    data.InputPipeline(demo_config, global_batch_size=4,
                       position={'epoch': 0, 'index': N_CROPS})
  with pytest.raises(ValueError, match="split 'test' not in"):
    data.InputPipeline(_with(demo_config, split='test'), global_batch_size=4)


def test_unprepared_dataset_says_what_to_run(demo_config, tmp_path):
  c = _with(demo_config, name='ffhq', data_dir=str(tmp_path))
  with pytest.raises(ValueError) as e:
    data.InputPipeline(c, global_batch_size=4)
  msg = str(e.value)
  assert '\n' not in msg
  assert ('python -m gen_synth.prepare_data --dataset=ffhq' in msg and
          f'--resolution={RES}' in msg)


def test_load_images(demo_config, reference):
  assert reference.shape == (N_CROPS, RES, RES, 3)
  assert reference.dtype == np.uint8
  np.testing.assert_array_equal(data.load_images(demo_config, max_images=3),
                                reference[:3])
