"""Run directory layout and orbax checkpoints.

WORKDIR/
  config.json                   the full config (models are rebuilt from it alone)
  checkpoints/<step>/
    generator/                  G_ema variables: {'params', 'fixed', 'stats'}
    train/                      everything else the trainer needs (G, D, optimiser
                                states, path-length mean, ...), written by training
    meta/                       JSON: step, data position, ...
  samples/, eval/               written by training and evaluation

`generator` is its own item so that generation and evaluation restore only
the EMA generator, never the optimiser state. Orbax writes each step to a
temporary directory and renames it when complete, so a save interrupted by a
kill is never taken for a checkpoint.
"""

import json
import os
from typing import Any, Optional

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def read_config(workdir) -> ml_collections.ConfigDict:
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: --workdir must be a gen_synth run directory")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def checkpoint_manager(workdir, max_to_keep: Optional[int] = 3,
                       save_interval_steps: int = 1) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, save_interval_steps=save_interval_steps,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(
      epath.Path(workdir) / CHECKPOINT_DIR, options=options,
      item_names=("generator", "train", "meta"))


def save(manager: ocp.CheckpointManager, step: int, generator: Any,
         train: Optional[Any] = None, meta: Optional[dict] = None, force=False) -> bool:
  items = dict(generator=ocp.args.StandardSave(generator),
               meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))))
  if train is not None:
    items["train"] = ocp.args.StandardSave(train)
  saved = manager.save(step, args=ocp.args.Composite(**items), force=force)
  manager.wait_until_finished()
  return saved


def split_train_state(state):
  """A train_steps.TrainState -> (generator item, train item), the checkpoint layout above."""
  generator = {"params": state.g_ema_params, "fixed": state.fixed, "stats": state.stats}
  train = {"step": state.step, "g_params": state.g_params, "d_params": state.d_params,
           "g_opt": state.g_opt, "d_opt": state.d_opt, "pl_mean": state.pl_mean,
           "aug_p": state.aug_p, "ada_signs": state.ada_signs}
  return generator, train


def restore_generator(workdir_or_manager, abstract_generator, step=None):
  """G_ema variables of `step` (default: latest) shaped like `abstract_generator`."""
  manager = workdir_or_manager
  if not isinstance(manager, ocp.CheckpointManager):
    manager = checkpoint_manager(workdir_or_manager, max_to_keep=None)
  step = manager.latest_step() if step is None else step
  if step is None:
    return None, None
  # The generator item always has a 'fixed' collection (empty for models without
  # fixed buffers, e.g. PixelFolder and CIPS), which their init does not return.
  abstract_generator = dict(abstract_generator)
  abstract_generator.setdefault("fixed", {})
  restored = manager.restore(step, args=ocp.args.Composite(
      generator=ocp.args.StandardRestore(abstract_generator)))
  return restored["generator"], step


# Train-item entries that checkpoints written before they existed lack; such a
# checkpoint restores them as zeros (augmentation p = 0, no ADA signs yet).
ADDED_TRAIN_KEYS = ("aug_p", "ada_signs")


def restore_all(manager: ocp.CheckpointManager, abstract_generator, abstract_train, step=None):
  """(generator, train, meta) of `step` (default: latest), or None when there is none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None

  def restore(train):
    return manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(abstract_generator),
        train=ocp.args.StandardRestore(train),
        meta=ocp.args.JsonRestore()))

  try:
    restored = restore(abstract_train)
  except ValueError as e:            # orbax: "Target path ('aug_p',) not found in ..."
    missing = [k for k in ADDED_TRAIN_KEYS if repr((k,)) in str(e)]
    if not missing:
      raise
    older = {k: v for k, v in abstract_train.items() if k not in ADDED_TRAIN_KEYS}
    restored = dict(restore(older))
    restored["train"] = dict(restored["train"])
    for k in ADDED_TRAIN_KEYS:
      a = abstract_train[k]
      zeros = jax.numpy.zeros(a.shape, a.dtype)
      sharding = getattr(a, "sharding", None)
      restored["train"][k] = zeros if sharding is None else jax.device_put(zeros, sharding)
  return restored["generator"], restored["train"], restored["meta"]


def has_checkpoint(workdir) -> bool:
  path = epath.Path(workdir) / CHECKPOINT_DIR
  return path.exists() and any(p.name.isdigit() for p in path.iterdir())
