"""Latents from seeds, generators from run directories, whole and tiled rendering."""

import re
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_synth import checkpointing
from gen_synth import models
from gen_synth import xla_cpu
from gen_synth.models import coords as coords_lib


class CannotTileError(ValueError):
  """Raised for tiling / coordinate transforms of a model that is not pixel-independent."""


def parse_seeds(spec: str) -> list:
  """'0-3,7' -> [0, 1, 2, 3, 7]."""
  seeds = []
  for part in str(spec).split(","):
    part = part.strip()
    if not part:
      continue
    m = re.fullmatch(r"(\d+)-(\d+)", part)
    seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1) if m else [int(part)])
  return seeds


def seed_latents(seeds: Sequence[int], z_dim: int) -> np.ndarray:
  """[N, z_dim] float32, each row `np.random.RandomState(seed).randn(1, z_dim)` (gen_images.py)."""
  return np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds]
                        ).astype(np.float32)


def to_uint8(images) -> np.ndarray:
  """[..., 3] float in about [-1, 1] -> uint8 as gen_images.py: x * 127.5 + 128, clipped."""
  return np.clip(np.asarray(images, np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)


def _tuples(tree):
  if isinstance(tree, list):
    return tuple(_tuples(x) for x in tree)
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  return tree


def build_model(config: ml_collections.ConfigDict, dtype=None):
  model_config = ml_collections.ConfigDict(_tuples(config.model.to_dict()))
  return models.build_generator(model_config, dtype=dtype)


def init_variables(model, seed: int = 0):
  """Random-initialisation variables {'params', 'fixed', 'stats'} of a generator."""
  z = jnp.zeros((1, model.z_dim), jnp.float32)
  init = xla_cpu.jit(lambda key: model.init({"params": key, "noise": key}, z))
  return init(jax.random.PRNGKey(seed))


def load_generator(workdir: Optional[str] = None, config=None, init_seed: int = 0,
                   step: Optional[int] = None, dtype=None):
  """(model, variables, config, step) from a run directory, or a random init from `config`.

  With a workdir the model is rebuilt from WORKDIR/config.json alone and the
  EMA generator of the latest (or given) checkpoint is restored; `step` is None
  for a random initialisation (seeded by `init_seed`).
  """
  if workdir is not None:
    config = checkpointing.read_config(workdir)
  if config is None:
    raise ValueError("give a --workdir (trained run) or a --config (random initialisation)")
  model = build_model(config, dtype)
  abstract = jax.eval_shape(lambda: init_variables(model, init_seed))
  variables, restored_step = None, None
  if workdir is not None and checkpointing.has_checkpoint(workdir):
    variables, restored_step = checkpointing.restore_generator(workdir, abstract, step)
  if variables is None:
    variables = init_variables(model, init_seed)
  return model, variables, config, restored_step


@xla_cpu.jit(static_argnames=("model", "method"), compute_dtype_of="model")
def _apply(model, variables, *args, method):
  return model.apply(variables, *args, method=method)


def map_latents(model, variables, z, truncation_psi=1.0, truncation_cutoff=None):
  """z [B, z_dim] -> ws [B, num_ws, w_dim]."""
  return _apply(model, variables, jnp.asarray(z, jnp.float32),
                jnp.float32(truncation_psi), truncation_cutoff, method="mapping")


def pixel_coords(model, indices, n):
  """Coordinates of integer pixel `indices` of an n-pixel axis, in the model's convention."""
  return coords_lib.pixel_coords(indices, n, model.coord_convention, *model.coord_range)


def cannot_tile_reason(model) -> Optional[str]:
  if getattr(model, "pixel_independent", False):
    return None
  return (f"{type(model).__name__} is not pixel-independent "
          f"({getattr(model, 'not_pixel_independent_because', 'its layers mix neighbouring pixels')}), "
          "so it cannot be tiled or given arbitrary coordinates")


def deterministic(model):
  """The model with random noise inputs switched off (StyleGAN's noise_mode='none')."""
  if getattr(model, "noise_mode", None) == "random":
    return model.clone(noise_mode="none")
  return model


def render(model, variables, ws, height: int, width: int, tile: Optional[int] = None,
           rows=None, cols=None) -> np.ndarray:
  """ws [B, num_ws, w_dim] -> images [B, H, W, 3] float32 (numpy).

  `tile=T` computes the image T x T pixels at a time: CREPS computes its row and
  column lines once and composes each tile from its own rows and columns; other
  pixel-independent models run on each tile's coordinates. Rendering is
  deterministic: models with noise inputs render without noise.
  """
  model = deterministic(model)
  if rows is None:
    rows = pixel_coords(model, np.arange(height), height)
  if cols is None:
    cols = pixel_coords(model, np.arange(width), width)
  if not tile:
    return np.asarray(_apply(model, variables, ws, rows, cols, method="synthesis"))
  reason = cannot_tile_reason(model)
  if reason:
    raise CannotTileError(reason)
  h, w = rows.shape[0], cols.shape[0]
  out = np.zeros((ws.shape[0], h, w, 3), np.float32)
  lines = None
  if hasattr(model, "line_features") and getattr(model, "biline", True):  # not CREPS-NB
    lines = _apply(model, variables, ws, rows, cols, method="line_features")
  for i0 in range(0, h, tile):
    for j0 in range(0, w, tile):
      i1, j1 = min(i0 + tile, h), min(j0 + tile, w)
      if lines is not None:
        piece = _apply(model, variables, ws, lines[0][:, :, i0:i1], lines[1][:, :, j0:j1],
                       method="compose")
      else:
        piece = _apply(model, variables, ws, rows[i0:i1], cols[j0:j1], method="synthesis")
      out[:, i0:i1, j0:j1] = np.asarray(piece)
  return out
