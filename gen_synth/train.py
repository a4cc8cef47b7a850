"""The training loop: set-up, checkpoints and the periodic hooks around the compiled step.

`train_and_evaluate(config, workdir)` is what `python -m gen_synth.main` runs;
tests and notebooks call it too. It resumes automatically from the latest
complete checkpoint in WORKDIR, saves on a fixed cadence and on SIGTERM, and
stops with a clear error (without saving) when a loss or gradient turns
non-finite.

The step itself (`CompiledSteps`) and `build_models` are in
gen_synth/compiled_steps.py, which needs no TensorFlow or clu; they are
re-exported here.
"""

import functools
import json
import os
import signal
import threading
import time
from typing import Optional

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from gen_synth import checkpointing
from gen_synth import compiled_steps
from gen_synth import data as data_lib
from gen_synth import sampling
from gen_synth import sharding as sharding_lib
from gen_synth import train_steps
from gen_synth import xla_cpu
from gen_synth.evaluation import evaluator

# The step the loop runs and its models live apart from the loop (no TF or clu).
CompiledSteps = compiled_steps.CompiledSteps
build_models = compiled_steps.build_models


class NonFiniteError(RuntimeError):
  """A loss, penalty or gradient norm became NaN/inf."""


# --- set-up ------------------------------------------------------------------

def total_steps(config) -> int:
  t = config.train
  if t.get("total_steps") is not None:
    return int(t.total_steps)
  return int(t.total_kimg * 1000) // t.batch_size


_split_for_checkpoint = checkpointing.split_train_state


def _join_from_checkpoint(generator, train) -> train_steps.TrainState:
  return train_steps.TrainState(
      step=train["step"], g_params=train["g_params"], g_ema_params=generator["params"],
      d_params=train["d_params"], g_opt=train["g_opt"], d_opt=train["d_opt"],
      fixed=generator["fixed"], stats=generator["stats"], pl_mean=train["pl_mean"],
      aug_p=train["aug_p"], ada_signs=train["ada_signs"])


def _with_shardings(abstract, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract, shardings)


def initial_state(config, workdir, generator, discriminator, g_tx, d_tx, mesh, manager):
  """(state, data position, state shardings): resumed, transferred or fresh."""
  init_fn = functools.partial(train_steps.init_state, generator, discriminator, g_tx, d_tx,
                              resolution=config.discriminator.resolution,
                              train_config=config.train)
  key = jax.random.PRNGKey(config.train.seed)
  abstract = jax.eval_shape(init_fn, key)
  shardings = sharding_lib.state_shardings(mesh, abstract, config.train.fsdp)
  abstract_gen, abstract_train = _split_for_checkpoint(
      _with_shardings(abstract, shardings))
  restored = checkpointing.restore_all(manager, abstract_gen, abstract_train)
  if restored is not None:
    gen, train, meta = restored
    logging.info("Resumed from %s at step %d", workdir, meta["step"])
    return _join_from_checkpoint(gen, train), meta.get("data_position"), shardings
  state = xla_cpu.jit(init_fn, out_shardings=shardings)(key)
  if config.get("init_from"):
    state, _, _ = _transfer_from(config.init_from, state, abstract_gen, abstract_train, mesh,
                                 config.train.fsdp)
  return state, None, shardings


def _transfer_from(source_workdir, state, abstract_gen, abstract_train, mesh=None, fsdp=False):
  """Starts from another run's G, G_ema, D, w_avg and 'fixed' buffers (fine-tuning).

  As the official `--resume` (`copy_params_and_buffers(require_all=False)`):
  every tensor whose path and shape exist in both runs is copied; the others
  keep their fresh initialisation, so a run may change resolution (CREPS
  FFHQ-512 -> MetFaces-1024: G's and D's extra highest-resolution blocks start
  fresh, and so does any buffer whose shape depends on the size). Adam states,
  the step, the path-length mean and ADA's p start fresh (the official loop
  loads only G, D and G_ema). The source is rebuilt from its own config.json;
  a source written by an older gen_synth without one is read with this run's shapes.
  """
  source = checkpointing.checkpoint_manager(source_workdir, max_to_keep=None)
  if source.latest_step() is None:
    raise FileNotFoundError(f"init_from={source_workdir!r} has no checkpoint")
  src_gen, src_train = abstract_gen, abstract_train
  if (epath.Path(source_workdir) / checkpointing.CONFIG_FILE).exists():
    src_config = checkpointing.read_config(source_workdir)
    g_src, d_src = build_models(src_config)
    g_tx, d_tx = train_steps.make_optimizers(src_config.train)
    init = functools.partial(train_steps.init_state, g_src, d_src, g_tx, d_tx,
                             resolution=src_config.discriminator.resolution)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    if mesh is not None:
      abstract = _with_shardings(abstract, sharding_lib.state_shardings(mesh, abstract, fsdp))
    src_gen, src_train = _split_for_checkpoint(abstract)
  gen, train, meta = checkpointing.restore_all(source, src_gen, src_train)
  copied, fresh = [], []

  def take(name, target, loaded):
    """`target` with every leaf of the same path and shape replaced by `loaded`'s."""
    by_path = {jax.tree_util.keystr(p): x
               for p, x in jax.tree_util.tree_leaves_with_path(loaded)}
    def pick(path, x):
      key = jax.tree_util.keystr(path)
      y = by_path.get(key)
      if y is not None and tuple(y.shape) == tuple(x.shape):
        copied.append(name + key)
        return jax.device_put(jnp.asarray(y, x.dtype), x.sharding)
      fresh.append(name + key)
      return x
    return jax.tree_util.tree_map_with_path(pick, target)

  state = state.replace(
      g_params=take("G", state.g_params, train["g_params"]),
      g_ema_params=take("G_ema", state.g_ema_params, gen["params"]),
      d_params=take("D", state.d_params, train["d_params"]),
      fixed=take("fixed", state.fixed, gen["fixed"]),
      stats=take("stats", state.stats, gen["stats"]))
  logging.info("Initialised from %s (step %d): %d tensors copied, %d fresh%s",
               source_workdir, meta["step"], len(copied), len(fresh),
               (": " + ", ".join(fresh)) if fresh else "")
  return state, copied, fresh


# --- periodic hooks ----------------------------------------------------------

def image_grid(images) -> np.ndarray:
  """uint8 [N, R, R, 3] -> a near-square grid [rows*R, cols*R, 3]."""
  n, resolution = images.shape[0], images.shape[1]
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.zeros((rows * resolution, cols * resolution, 3), np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, cols)
    grid[r * resolution:(r + 1) * resolution, c * resolution:(c + 1) * resolution] = img
  return grid


class Hooks:
  """Logging, sample grids, evaluation and checkpoints, each on its own cadence."""

  def __init__(self, config, workdir, generator, manager, num_steps, start_step):
    self.config, self.workdir, self.generator, self.manager = config, workdir, generator, manager
    self.num_steps = num_steps
    self.is_main = jax.process_index() == 0
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_main)
    self.jsonl = epath.Path(workdir) / "metrics.jsonl"   # scalars, one JSON per line
    self.report = periodic_actions.ReportProgress(
        num_train_steps=num_steps, writer=self.writer,
        every_steps=config.log_every_steps)
    self.sample_z = jnp.asarray(sampling.seed_latents(range(config.num_sample_images),
                                                      generator.z_dim))
    res = config.model.resolution
    self.sample_fn = xla_cpu.jit(lambda v, z, key: generator.apply(
        v, z, height=res, width=res, rngs={"noise": key}), compute_dtype=generator.dtype)
    self.pending = []
    self.last_log = (start_step, time.time())
    self.best = self._read_best()
    self.progress = None
    if self.is_main and config.get("progress_bar", False):
      import tqdm  # pylint: disable=g-import-not-at-top
      self.progress = tqdm.tqdm(total=num_steps, initial=start_step, unit="step",
                                dynamic_ncols=True)

  def after_step(self, step, state, metrics, pipeline, force_save=False):
    """step = number of completed steps."""
    c = self.config
    self.pending.append(metrics)
    self.report(step)
    if self.progress is not None:
      self.progress.update(1)
    log_now = step % c.log_every_steps == 0
    save_now = force_save or step % c.checkpoint_every_steps == 0
    if log_now or save_now:
      self._log(step)          # raises NonFiniteError before any save
    if (c.sample_every_steps and step % c.sample_every_steps == 0) or step == self.num_steps:
      self.write_samples(step, state)
    if c.eval.every_steps and step % c.eval.every_steps == 0:
      self.evaluate(step, state)
    if save_now:
      self.save(step, state, pipeline)

  def _log(self, step):
    if not self.pending:
      return
    fetched = jax.device_get(self.pending)
    self.pending = []
    bad = [i for i, m in enumerate(fetched) if not bool(m["finite"])]
    if bad:
      first = step - len(fetched) + bad[0] + 1
      values = {k: float(v) for k, v in fetched[bad[0]].items() if k != "finite"}
      raise NonFiniteError(
          f"non-finite loss or gradient at step {first}: {values}. Training stopped; "
          f"the latest checkpoint ({self.manager.latest_step()}) was written before it. "
          "Lower the learning rates or raise r1_gamma, then resume.")
    scalars = {}
    keys = sorted({k for m in fetched for k in m} - {"finite"})   # R1/PL only on their steps
    for key in keys:
      scalars[key] = float(np.mean([float(m[key]) for m in fetched if key in m]))
    prev_step, prev_time = self.last_log
    now = time.time()
    if step > prev_step:
      scalars["images_per_sec"] = (step - prev_step) * self.config.train.batch_size / (now - prev_time)
    scalars["kimg"] = step * self.config.train.batch_size / 1000
    self.last_log = (step, now)
    self._write_scalars(step, scalars)
    if self.progress is not None:
      self.progress.set_postfix(g=f"{scalars['g_loss']:.3f}", d=f"{scalars['d_loss']:.3f}")

  def _write_scalars(self, step, scalars):
    self.writer.write_scalars(step, scalars)
    if self.is_main:
      with self.jsonl.open("a") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")

  def write_samples(self, step, state):
    images = self.sample_fn(state.generator_variables(ema=True), self.sample_z,
                            jax.random.PRNGKey(0))
    grid = image_grid(sampling.to_uint8(jax.device_get(images)))
    if self.is_main:
      path = epath.Path(self.workdir) / "samples"
      path.mkdir(parents=True, exist_ok=True)
      Image.fromarray(grid).save(os.fspath(path / f"step{step:08d}.png"))
      logging.info("Wrote samples to %s", path / f"step{step:08d}.png")
    self.writer.write_images(step, {"samples": grid[None]})

  def evaluate(self, step, state):
    c = self.config
    names = [m.strip() for m in c.eval.metrics.split(",") if m.strip()]
    if not names:
      return
    results = evaluate_generator(c, self.generator, state.generator_variables(ema=True), names)
    self._write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    self._update_best(step, state, results)

  def _read_best(self):
    path = epath.Path(self.workdir) / "eval" / "best.json"
    return json.loads(path.read_text()) if path.exists() else {}

  def _update_best(self, step, state, results):
    """Tracks the best (lowest) value of the first metric; its G_ema goes to WORKDIR/best/."""
    key = next(iter(results))
    value = results[key]
    if self.best.get("metric") == key and self.best["value"] <= value:
      return
    self.best = {"metric": key, "value": value, "step": step, "all": results}
    best_manager = checkpointing.checkpoint_manager(
        epath.Path(self.workdir) / "best", max_to_keep=1)
    generator, _ = _split_for_checkpoint(state)
    checkpointing.save(best_manager, step, generator, meta={"metrics": results}, force=True)
    if self.is_main:
      path = epath.Path(self.workdir) / "eval"
      path.mkdir(parents=True, exist_ok=True)
      (path / "best.json").write_text(json.dumps(self.best, indent=2))

  def save(self, step, state, pipeline):
    generator, train = _split_for_checkpoint(state)
    checkpointing.save(self.manager, step, generator, train,
                       meta={"data_position": pipeline.get_position()}, force=True)

  def close(self):
    self.writer.flush()
    if self.progress is not None:
      self.progress.close()


def evaluate_generator(config, generator, variables, metric_names, num_generated=None):
  """{metric: value} of a generator's images against config.data's real images."""
  e = config.eval
  resolution = config.model.resolution
  apply = xla_cpu.jit(lambda v, z, key: generator.apply(v, z, height=resolution, width=resolution,
                                                         rngs={"noise": key}),
                      compute_dtype=generator.dtype)

  def generate_fn(num, seed, batch_size):
    rng = np.random.RandomState(seed)
    for start in range(0, num, batch_size):
      b = min(batch_size, num - start)
      z = rng.randn(b, generator.z_dim).astype(np.float32)
      images = apply(variables, z, jax.random.PRNGKey(seed + start))
      yield sampling.to_uint8(jax.device_get(images))

  def real_images_fn():
    split = e.get("real_split") or config.data.split
    return data_lib.load_images(config.data, split=split, max_images=e.num_real)

  return evaluator.compute_metrics(
      metric_names, generate_fn=generate_fn, real_images_fn=real_images_fn,
      num_generated=num_generated or e.num_samples, eval_config=e, seed=config.train.seed)


# --- the loop ----------------------------------------------------------------

def _log_startup(config, state):
  logging.info("jax %s, %d processes, devices: %s", jax.__version__, jax.process_count(),
               jax.devices())
  logging.info("config:\n%s", config)
  if jax.process_index() == 0:
    parameter_overview.log_parameter_overview(jax.device_get(state.g_params), msg="G params")
    parameter_overview.log_parameter_overview(jax.device_get(state.d_params), msg="D params")


class _StopFlag:
  """Set by SIGTERM (preemption): the loop saves a checkpoint and returns."""

  def __init__(self):
    self.stop = False
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    else:
      self._previous = None

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.stop = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       max_steps: Optional[int] = None) -> train_steps.TrainState:
  """Trains (or resumes) the run in `workdir`; returns the final state.

  `max_steps` stops early after that many steps in this call (for tests and
  preemption drills): a checkpoint is written there, as on SIGTERM.
  """
  workdir = os.fspath(workdir)
  checkpointing.write_config(workdir, config)
  mesh = sharding_lib.make_mesh()
  generator, discriminator = build_models(config)
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  manager = checkpointing.checkpoint_manager(workdir, max_to_keep=config.keep_checkpoints)
  state, position, state_shardings = initial_state(
      config, workdir, generator, discriminator, g_tx, d_tx, mesh, manager)
  _log_startup(config, state)
  num_steps = total_steps(config)
  start = int(jax.device_get(state.step))
  pipeline = data_lib.InputPipeline(
      config.data, global_batch_size=config.train.batch_size,
      sharding=sharding_lib.batch_sharding(mesh), seed=config.train.seed, position=position)
  steps = CompiledSteps(config, generator, discriminator, g_tx, d_tx, mesh, state_shardings)
  root_key = jax.device_put(jax.random.PRNGKey(config.train.seed + 1),
                            sharding_lib.replicated(mesh))
  hooks = Hooks(config, workdir, generator, manager, num_steps, start)
  stop = _StopFlag()
  try:
    step = start
    if step == 0 and config.eval.every_steps:
      hooks.evaluate(0, state)   # the baseline of the eval curves
      hooks.write_samples(0, state)
    while step < num_steps:
      images = next(pipeline)
      state, metrics = steps(step, state, images, root_key)
      step += 1
      halt = stop.stop or (max_steps is not None and step - start >= max_steps)
      hooks.after_step(step, state, metrics, pipeline,
                       force_save=halt or step == num_steps)
      if halt:
        break
  finally:
    stop.restore()
    hooks.close()
    pipeline.close()
    manager.wait_until_finished()
  return state
