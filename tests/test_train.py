"""Training: sharded == single device, resume == uninterrupted, NaN stop, learning."""

import functools
import os

import jax
import numpy as np
import pytest

from gen_synth import checkpointing
from gen_synth import sharding as sharding_lib
from gen_synth import train
from gen_synth import train_steps
from tests import helpers


def tiny_config(tmp_path, **train_overrides):
  config = helpers.load_config("creps_ffhq.py", "tiny")
  config.data.data_dir = str(tmp_path.parent / "tfds")   # shared demo build per session
  config.data.num_demo_crops = 64
  config.train.batch_size = 16                          # PL batch 8: one per device of 8
  config.train.pl_interval = 2
  config.train.r1_interval = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 4
  config.progress_bar = False
  for k, v in train_overrides.items():
    config.train[k] = v
  return config


def _state_and_step(config, num_devices):
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  mesh = sharding_lib.make_mesh(num_devices)
  init = functools.partial(train_steps.init_state, generator, discriminator, g_tx, d_tx,
                           resolution=config.model.resolution)
  shardings = sharding_lib.state_shardings(mesh, jax.eval_shape(init, jax.random.PRNGKey(0)))
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  steps = train.CompiledSteps(config, generator, discriminator, g_tx, d_tx, mesh, shardings)
  return state, steps, mesh


def test_step_on_8_devices_equals_1_device(tmp_path):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 virtual CPU devices"
  config = tiny_config(tmp_path)
  images = jax.random.uniform(jax.random.PRNGKey(1), (16, 32, 32, 3), minval=-1, maxval=1)
  results = []
  for n in (1, 8):
    state, steps, mesh = _state_and_step(config, n)
    batch = jax.device_put(images, sharding_lib.batch_sharding(mesh))
    assert steps.due(0) == (True, True)                  # Gmain, PL, Dmain, R1, EMA
    state, metrics = steps(0, state, batch, jax.random.PRNGKey(7))
    if n == 8:
      assert len(batch.sharding.device_set) == 8
    results.append(jax.device_get((state, metrics)))
  (s1, m1), (s8, m8) = results
  # The same math, summed in a different order across devices (all-reduces,
  # sharded GEMMs): float32 rounding only. Adam's first step moves each
  # weight by about lr * sign(grad), so compare updates at 1e-5 of lr scale.
  for name in ("g_params", "d_params", "g_ema_params"):
    for a, b in zip(jax.tree.leaves(getattr(s1, name)), jax.tree.leaves(getattr(s8, name))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
  np.testing.assert_allclose(s1.pl_mean, s8.pl_mean, rtol=1e-4)
  for key in ("g_loss", "d_loss", "r1_penalty", "pl_penalty"):
    np.testing.assert_allclose(m1[key], m8[key], rtol=1e-4)


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bit_exact_and_ignores_incomplete_checkpoint(tmp_path):
  config = tiny_config(tmp_path, total_steps=5)
  full = train.train_and_evaluate(config, tmp_path / "full")
  # Interrupted: 3 steps (checkpoint at 3), a planted half-written save of
  # step 4, then resume for the remaining 2 steps.
  part = tmp_path / "part"
  train.train_and_evaluate(config, part, max_steps=3)
  planted = part / "checkpoints" / "4.orbax-checkpoint-tmp-1234"
  (planted / "train").mkdir(parents=True)
  (planted / "train" / "garbage").write_bytes(b"\0" * 100)
  manager = checkpointing.checkpoint_manager(part)
  assert manager.latest_step() == 3
  resumed = train.train_and_evaluate(config, part)
  assert int(resumed.step) == int(full.step) == 5
  _leaves_equal(full, resumed)     # params, optimiser states, w_avg, PL mean
  meta_full = checkpointing.checkpoint_manager(tmp_path / "full").restore(
      5, args=checkpointing.ocp.args.Composite(meta=checkpointing.ocp.args.JsonRestore()))
  meta_part = checkpointing.checkpoint_manager(part).restore(
      5, args=checkpointing.ocp.args.Composite(meta=checkpointing.ocp.args.JsonRestore()))
  assert meta_full["meta"]["data_position"] == meta_part["meta"]["data_position"]
  assert meta_full["meta"]["data_position"] == {"epoch": 1, "index": 16}  # 80 samples of 64
  assert os.path.exists(tmp_path / "full" / "samples" / "step00000004.png")
  assert (tmp_path / "full" / "config.json").exists()


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_config(tmp_path, total_steps=6, inject_nan_at_step=2)
  workdir = tmp_path / "nan"
  with pytest.raises(train.NonFiniteError, match="non-finite loss or gradient at step 3"):
    train.train_and_evaluate(config, workdir)
  manager = checkpointing.checkpoint_manager(workdir)
  assert manager.all_steps() == [2]
  generator, _ = train._split_for_checkpoint(
      jax.eval_shape(lambda: _state_and_step(config, 1)[0]))
  restored, step = checkpointing.restore_generator(workdir, generator)
  assert step == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored))
