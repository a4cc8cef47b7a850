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


def _state_and_step(config, num_devices, initial_state=None, record=False):
  """(state, steps, mesh) on the first `num_devices` devices.

  With `initial_state` (host arrays), that exact state is placed on the mesh
  instead of a fresh init, so that two meshes start from the same bits.
  """
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  mesh = sharding_lib.make_mesh(num_devices)
  init = functools.partial(train_steps.init_state, generator, discriminator, g_tx, d_tx,
                           resolution=config.model.resolution)
  shardings = sharding_lib.state_shardings(mesh, jax.eval_shape(init, jax.random.PRNGKey(0)),
                                           fsdp=config.train.fsdp)
  if initial_state is None:
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  else:
    state = jax.device_put(initial_state, shardings)
  steps = train.CompiledSteps(config, generator, discriminator, g_tx, d_tx, mesh, shardings,
                              record=record)
  return state, steps, mesh


# --- sharded == one device ----------------------------------------------------
#
# Sharding changes only the order of float32 sums (all-reduces, sharded GEMMs).
# What the code controls -- losses, per-sample logits and penalties, the
# gradient of every phase before its optimiser step, w_avg and the PL mean --
# is compared directly. Parameters after Adam are not compared element by
# element: Adam's first updates are sign-like (lr * g / |g|), so an element
# whose gradient is within rounding of zero moves by +-lr depending on how the
# CPU's code generation rounds; parameters are compared as the share of
# elements that agree.
#
# Measured on a 2-core AMD EPYC, 1 vs 8 devices (tiny CREPS, batch 16):
# losses and penalties <= 1.3e-7 relative; per-sample values <= 2.6e-6 of
# their largest magnitude; each gradient tensor <= 1.8e-5 of its norm (the
# largest: R1's, a second derivative). The planted bugs this must catch move
# the same quantities by >= 0.1 (a gradient averaged twice: 0.875; a missing
# all-reduce or a wrong batch split: O(1)), so the tolerances below sit ~50x
# above rounding and ~100x below the smallest bug.
GRAD_RTOL = 1e-3        # |g_1 - g_n| <= GRAD_RTOL * |g_1|, per tensor (norms)
VALUE_RTOL = 1e-4       # per-sample arrays, against their largest magnitude
LOSS_RTOL = 1e-5        # scalar losses, penalties, PL mean, w_avg


def _num_devices():
  n = jax.device_count()
  if n < 2 or 8 % n:
    pytest.skip(f"needs 2, 4 or 8 devices for a batch of 16 (PL batch 8); have {n}")
  return n


def _images(step):
  return jax.random.uniform(jax.random.PRNGKey(100 + step), (16, 32, 32, 3),
                            minval=-1, maxval=1)


def _run_steps(config, num_devices, initial_state, num_steps):
  """`num_steps` recorded steps from `initial_state` -> host (state, [metrics per step])."""
  state, steps, mesh = _state_and_step(config, num_devices, initial_state, record=True)
  history = []
  for step in range(num_steps):
    batch = jax.device_put(_images(step), sharding_lib.batch_sharding(mesh))
    assert len(batch.sharding.device_set) == num_devices
    state, metrics = steps(step, state, batch, jax.random.PRNGKey(7))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def _initial_state(config):
  return jax.device_get(_state_and_step(config, 1)[0])


def _assert_trees_close(a, b, rtol, what):
  """Per tensor: |a - b| <= rtol * |a| (Frobenius norms)."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    err, scale = np.linalg.norm(x - y), np.linalg.norm(x)
    assert err <= rtol * scale, (
        f"{what}{jax.tree_util.keystr(path)}: |a-b| = {err:.3g} > {rtol} * |a| = {scale:.3g}")


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_sharded_step_gradients_equal_1_device(tmp_path, fsdp):
  """One step with every phase due: what each phase computed before its optimiser."""
  n = _num_devices()
  # lr = 0: every phase sees the initial parameters on both meshes, so each
  # gradient is a function of the same inputs (no Adam step in between).
  config = tiny_config(tmp_path, g_lr=0.0, d_lr=0.0, fsdp=fsdp)
  state0 = _initial_state(config)
  (s1, (m1,)), (sn, (mn,)) = (_run_steps(config, k, state0, 1) for k in (1, n))
  r1, rn = m1.pop("record"), mn.pop("record")
  assert sorted(r1["grads"]) == ["d_main", "d_r1", "g_main", "g_pl"]
  for phase in r1["grads"]:
    _assert_trees_close(r1["grads"][phase], rn["grads"][phase], GRAD_RTOL, f"grad {phase}")
  for key in ("real_logits", "fake_logits", "fake_logits_g", "r1_penalty", "pl_penalty"):
    a, b = np.asarray(r1[key]), np.asarray(rn[key])
    assert a.shape == b.shape and a.shape[0] in (8, 16), key
    np.testing.assert_allclose(b, a, rtol=0, atol=VALUE_RTOL * np.abs(a).max(), err_msg=key)
  for key in ("g_loss", "d_loss", "r1_penalty", "pl_penalty", "pl_mean"):
    np.testing.assert_allclose(mn[key], m1[key], rtol=LOSS_RTOL, err_msg=key)
  _assert_trees_close(s1.stats, sn.stats, LOSS_RTOL, "w_avg")
  # lr = 0 leaves the parameters exactly where they were, on both meshes.
  _leaves_equal(s1.g_params, state0.g_params)
  _leaves_equal(sn.d_params, state0.d_params)


def test_sharded_training_equals_1_device_over_steps(tmp_path):
  """Two steps (all phases, then none): state carried through Adam, EMA, w_avg, PL mean."""
  n = _num_devices()
  config = tiny_config(tmp_path)
  state0 = _initial_state(config)
  (s1, h1), (sn, hn) = (_run_steps(config, k, state0, 2) for k in (1, n))
  assert [sorted(m["record"]["grads"]) for m in h1] == [
      ["d_main", "d_r1", "g_main", "g_pl"], ["d_main", "g_main"]]
  # Step two's gradients are taken at parameters that already differ by the
  # sign-like first updates, so they agree less tightly than step one's.
  for phase in ("g_main", "d_main"):
    _assert_trees_close(h1[1]["record"]["grads"][phase], hn[1]["record"]["grads"][phase],
                        0.05, f"step 1 grad {phase}")
  for key in ("g_loss", "d_loss"):
    np.testing.assert_allclose(hn[1][key], h1[1][key], rtol=1e-3, err_msg=key)
  # The PL mean and w_avg of these steps come after Gmain's sign-like update.
  np.testing.assert_allclose(sn.pl_mean, s1.pl_mean, rtol=1e-4)
  _assert_trees_close(s1.stats, sn.stats, 1e-4, "w_avg")
  assert int(s1.step) == int(sn.step) == 2
  lr = config.train.g_lr
  assert config.train.d_lr == lr
  # Parameters and EMA, per network, in units of lr: measured here, the median
  # element differs by 4e-4 and 0.06 % (G) / 0.27 % (D) of the elements by
  # more than 0.05 (sign-flipped near-zero gradients, up to ~2 each). A missing
  # all-reduce or a wrong batch split flips a large share of the signs.
  for name in ("g_params", "g_ema_params", "d_params"):
    diff = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
        jax.tree.leaves(getattr(s1, name)), jax.tree.leaves(getattr(sn, name)))]) / lr
    assert np.median(diff) < 0.01, (name, np.median(diff))
    assert (diff > 0.05).mean() < 0.01, (name, (diff > 0.05).mean())
  for name in ("g_opt", "d_opt"):     # optax.adam: (ScaleByAdamState, EmptyState)
    a, b = getattr(s1, name)[0], getattr(sn, name)[0]
    _assert_trees_close(a.nu, b.nu, 0.05, f"{name}.nu")
    assert int(a.count) == int(b.count) == 3        # Gmain + Greg + Gmain / Dmain + Dreg + Dmain


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bit_exact_and_ignores_incomplete_checkpoint(tmp_path):
  # With ADA on, and a target of -1 so that p rises after every step (r_t > -1
  # unless every logit is negative): the resumed run must restore p and the
  # signs accumulated since its last update bit-exactly, not restart them.
  config = tiny_config(tmp_path, total_steps=5, augment="ada", ada_target=-1.0,
                       ada_interval=2, ada_kimg=0.5)
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
  _leaves_equal(full, resumed)     # params, optimiser states, w_avg, PL mean, ADA's p
  assert float(resumed.aug_p) == pytest.approx(2 * 16 * 2 / 500)   # adjusted after steps 2, 4
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


def test_bfloat16_compute_step_is_close_to_float32(tmp_path):
  """`compute_dtype=bfloat16` (params, Adam and the losses stay float32): one
  step of every phase from the same state, against float32's.

  Measured (tiny CREPS, batch 16, one device, 2-core AMD EPYC): losses within
  0.05 %, penalties within 2 %, G's gradient norms within 5 % (Gmain's 1 %),
  Dmain's 10 % off (D's convolutions return bfloat16), R1's 0.6 %. Before G's dots
  accumulated in float32 with float32 products (`layers.matmul_last`), Gmain's
  gradient norm was 27 % below float32's (0.398 vs 0.546), which this fails.
  """
  config = tiny_config(tmp_path)
  initial = _initial_state(config)
  results = {}
  for dtype in ("float32", "bfloat16"):
    config.train.compute_dtype = dtype
    _, history = _run_steps(config, 1, initial, 1)
    results[dtype] = {k: float(v) for k, v in history[0].items()
                      if not isinstance(v, dict) and np.ndim(v) == 0}
  f32, bf16 = results["float32"], results["bfloat16"]
  for key, rtol in (("g_loss", 0.01), ("d_loss", 0.01), ("pl_penalty", 0.1),
                    ("r1_penalty", 0.1), ("g_grad_norm", 0.1), ("pl_grad_norm", 0.15),
                    ("d_grad_norm", 0.2), ("r1_grad_norm", 0.1)):
    assert np.isfinite(bf16[key]) and bf16[key] != f32[key], (key, bf16[key])
    assert abs(bf16[key] - f32[key]) <= rtol * abs(f32[key]), (key, f32[key], bf16[key])
