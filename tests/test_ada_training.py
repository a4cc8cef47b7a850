"""ADA in the training loop: configs, p's rule on real training, gradients, old checkpoints, transfer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth import checkpointing
from gen_synth import sharding as sharding_lib
from gen_synth import train
from gen_synth import train_steps
from tests import helpers


def test_augment_modes_and_config_defaults():
  mode = lambda s: train_steps.augment_mode({"augment": s, "augment_p": 0.25})
  assert mode("none") == ("none", 0.0)
  assert mode("ada") == ("ada", 0.25)
  assert mode("fixed:0.3") == ("fixed", 0.3)
  for bad in ("fixed", "ada:0.1", "bgc", "none:1"):
    with pytest.raises(ValueError, match="train.augment"):
      mode(bad)
  # Official CREPS train.py: --aug=ada by default; the rosinality-based recipes: none.
  assert helpers.load_config("creps_ffhq.py").train.augment == "ada"
  assert helpers.load_config("creps_ffhq.py", "variant=nb").train.augment == "ada"
  assert helpers.load_config("pixelfolder_ffhq.py").train.augment == "none"
  assert helpers.load_config("cips_ffhq.py").train.augment == "none"
  t = helpers.load_config("creps_ffhq.py").train
  assert (t.augment_pipe, t.ada_target, t.ada_interval, t.ada_kimg) == ("bgc", 0.6, 4, 500)
  runs = {name: helpers.load_config("creps_paper.py", f"run={name}")
          for name in ("ffhq512", "ffhq1024", "metfaces1024", "church256", "scenery256")}
  got = {n: (c.model.resolution, c.data.name, c.train.r1_gamma, c.train.augment,
             c.train.batch_size) for n, c in runs.items()}
  assert got == {"ffhq512": (512, "ffhq", 8.2, "ada", 32),
                 "ffhq1024": (1024, "ffhq", 10.0, "none", 32),
                 "metfaces1024": (1024, "metfaces", 6.6, "ada", 32),
                 "church256": (256, "lsun_church", 2.0, "ada", 32),
                 "scenery256": (256, "flickr_scenery", 2.0, "ada", 32)}
  m = runs["metfaces1024"].train
  assert (m.ada_kimg, m.ema_rampup, m.total_kimg) == (100, None, 5000)   # what --resume sets


def _tiny(**train_overrides):
  config = helpers.load_config("creps_ffhq.py", "tiny")
  t = config.train
  t.batch_size = 8
  t.augment = "ada"
  t.ada_interval = 1
  t.ada_kimg = 0.4           # p moves by 8 * 1 / 400 = 0.02 per adjustment
  for k, v in train_overrides.items():
    t[k] = v
  return config


@pytest.fixture(scope="module")
def tiny_setup():
  """(config, generator, state, jitted d_main / finish / g_main phases, sample fn) on 1 device."""
  config = _tiny()
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  mesh = sharding_lib.make_mesh(1)
  init = functools.partial(train_steps.init_state, generator, discriminator, g_tx, d_tx,
                           resolution=32, train_config=config.train)
  shardings = sharding_lib.state_shardings(mesh, jax.eval_shape(init, jax.random.PRNGKey(0)))
  state = jax.device_get(jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0)))
  phases = {name: jax.jit(functools.partial(
      train_steps.run_phase, name, generator=generator, discriminator=discriminator,
      train_config=config.train, g_tx=g_tx, d_tx=d_tx, record=name == "g_main"))
            for name in ("d_main", "finish", "g_main")}
  sample = jax.jit(lambda v, z, key: generator.apply(v, z, height=32, width=32,
                                                     rngs={"noise": key}))
  return config, generator, state, phases, sample


def _train_d(tiny_setup, reals_fn, steps=40):
  """D trained alone (G fixed) on reals_fn(step) -> (p after each step, real sign means)."""
  _, generator, state, phases, _ = tiny_setup
  ps, signs = [], []
  for step in range(steps):
    state, m = phases["d_main"](state, reals_fn(state, step), jax.random.PRNGKey(3))
    signs.append(float(m["real_signs"]))
    state, m = phases["finish"](state, reals_fn(state, step), jax.random.PRNGKey(3))
    ps.append(float(m["aug_p"]))
  return np.array(ps), np.array(signs)


def test_p_rises_when_d_overfits_and_stays_at_zero_when_it_cannot(tiny_setup):
  """ADA's rule on real training: r_t = mean sign(D(aug(real))) against the 0.6 target.

  Overfits: two fixed photos-like images as the whole 'dataset', against a
  random G's fakes: D separates them and p climbs. Cannot: the 'reals' are
  fresh samples of the same fixed G, so reals and fakes are one distribution;
  r_t stays near 0 and p stays clamped at 0.
  """
  _, _, _, _, sample = tiny_setup
  yy, xx = np.mgrid[0:32, 0:32] / 31.0
  two = np.stack([np.stack([xx, yy, xx * yy], -1), np.stack([1 - yy, xx, 1 - xx], -1)]) * 2 - 1
  fixed_reals = jnp.asarray(np.repeat(two, 4, axis=0), jnp.float32)        # [8, 32, 32, 3]
  p_fit, signs_fit = _train_d(tiny_setup, lambda s, i: fixed_reals)

  def fresh_fakes(state, step):
    z = jax.random.normal(jax.random.PRNGKey(1000 + step), (8, tiny_setup[1].z_dim))
    return sample(state.generator_variables(ema=False), z, jax.random.PRNGKey(step))
  p_same, signs_same = _train_d(tiny_setup, fresh_fakes)
  # The rule: each step p moves by +-0.02 toward sign(r_t - 0.6), clamped at 0.
  assert p_fit[-1] >= 0.2, (p_fit, signs_fit)
  # (once p is up, r_t hovers around the target: that is ADA's feedback)
  assert p_same.max() <= 0.1 and p_same[-1] <= 0.04, (p_same, signs_same)
  assert abs(np.mean(signs_same)) < 0.6
  expected = [0.0]
  for r in signs_fit:
    expected.append(max(expected[-1] + np.sign(r - 0.6) * 0.02, 0.0))
  np.testing.assert_allclose(p_fit, expected[1:], atol=1e-6)


def test_g_gradient_flows_through_the_pipe(tiny_setup):
  """Gmain's G gradient passes through the augmentation and depends on it (p = 0 vs p = 1)."""
  _, _, state, phases, _ = tiny_setup
  reals = jnp.zeros((8, 32, 32, 3))
  grads = {}
  for p in (0.0, 1.0):
    s = state.replace(aug_p=jnp.float32(p))
    _, m = phases["g_main"](s, reals, jax.random.PRNGKey(5))
    grads[p] = m["record"]["grads"]["g_main"]
  norm = lambda t: float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(t))))
  diff = jax.tree.map(lambda a, b: a - b, grads[0.0], grads[1.0])
  assert np.isfinite(norm(grads[1.0])) and norm(grads[1.0]) > 0
  assert norm(diff) > 1e-3 * norm(grads[0.0])          # the pipe is in the gradient path


def test_checkpoint_without_augment_state_restores_p_as_zero(tmp_path):
  """Checkpoints written before ADA existed (no 'aug_p', 'ada_signs') still resume."""
  manager = checkpointing.checkpoint_manager(tmp_path)
  gen = {"params": {"w": np.ones(3, np.float32)}, "fixed": {}, "stats": {}}
  old_train = {"step": np.int32(4), "pl_mean": np.float32(0.5)}
  checkpointing.save(manager, 4, gen, old_train, meta={"data_position": None}, force=True)
  abstract = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), t)
  new_train = dict(old_train, aug_p=np.float32(0.3), ada_signs=np.zeros(2, np.float32))
  _, train_item, meta = checkpointing.restore_all(manager, abstract(gen), abstract(new_train))
  assert meta["step"] == 4 and float(train_item["pl_mean"]) == 0.5
  assert float(train_item["aug_p"]) == 0.0 and np.all(np.asarray(train_item["ada_signs"]) == 0)


def test_transfer_to_a_higher_resolution_copies_what_matches(tmp_path):
  """init_from a 32x32 run into a 64x64 one: the shared blocks load, the new ones start fresh."""
  def fresh_state(res, seed):
    config = helpers.load_config("creps_ffhq.py", "tiny")
    config.model.resolution = config.data.resolution = config.discriminator.resolution = res
    generator, discriminator = train.build_models(config)
    g_tx, d_tx = train_steps.make_optimizers(config.train)
    init = functools.partial(train_steps.init_state, generator, discriminator, g_tx, d_tx,
                             resolution=res, train_config=config.train)
    return config, init, jax.jit(init)(jax.random.PRNGKey(seed))

  src_config, _, src = fresh_state(32, 1)
  checkpointing.write_config(tmp_path / "src", src_config)
  gen_item, train_item = checkpointing.split_train_state(src)
  checkpointing.save(checkpointing.checkpoint_manager(tmp_path / "src"), 7, gen_item,
                     train_item, meta={"data_position": None}, force=True)
  _, init, target = fresh_state(64, 0)
  abstract_gen, abstract_train = train._split_for_checkpoint(  # pylint: disable=protected-access
      jax.eval_shape(init, jax.random.PRNGKey(0)))
  state, copied, fresh = train._transfer_from(  # pylint: disable=protected-access
      tmp_path / "src", target, abstract_gen, abstract_train)
  assert copied and fresh
  src_leaves = {}
  for name, tree in (("G", src.g_params), ("G_ema", src.g_ema_params), ("D", src.d_params),
                     ("fixed", src.fixed), ("stats", src.stats)):
    src_leaves.update({name + jax.tree_util.keystr(p): x
                       for p, x in jax.tree_util.tree_leaves_with_path(tree)})
  out_leaves, init_leaves = {}, {}
  for name, new, old in (("G", state.g_params, target.g_params),
                         ("G_ema", state.g_ema_params, target.g_ema_params),
                         ("D", state.d_params, target.d_params), ("fixed", state.fixed, target.fixed),
                         ("stats", state.stats, target.stats)):
    out_leaves.update({name + jax.tree_util.keystr(p): x
                       for p, x in jax.tree_util.tree_leaves_with_path(new)})
    init_leaves.update({name + jax.tree_util.keystr(p): x
                        for p, x in jax.tree_util.tree_leaves_with_path(old)})
  for path in copied:
    np.testing.assert_array_equal(out_leaves[path], src_leaves[path])
  for path in fresh:
    np.testing.assert_array_equal(out_leaves[path], init_leaves[path])
    assert path not in src_leaves or src_leaves[path].shape != out_leaves[path].shape
  # What is new at 64: D's 64x64 input block and G's 64 block (and their w slots).
  assert any(p.startswith("D") for p in fresh) and any(p.startswith("G_ema") for p in fresh)
  assert all(p in copied for p in src_leaves if p in out_leaves
             and src_leaves[p].shape == out_leaves[p].shape)
  assert int(state.step) == 0 and float(state.pl_mean) == 0.0 and float(state.aug_p) == 0.0
