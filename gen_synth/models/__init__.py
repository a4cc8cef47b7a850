"""Model zoo: a name -> generator registry built from `config.model`."""

import jax.numpy as jnp
import ml_collections

from gen_synth.models import cips
from gen_synth.models import creps
from gen_synth.models import pixelfolder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _creps(cfg, **kw):
  return creps.CREPS(**kw)


def _creps_nb(cfg, **kw):
  return creps.CREPS(biline=False, **kw)


def _pixelfolder(cfg, **kw):
  return pixelfolder.PixelFolder(**kw)


def _cips(cfg, **kw):
  return cips.CIPS(**kw)


GENERATORS = {
    "creps": _creps,
    "creps_nb": _creps_nb,
    "pixelfolder": _pixelfolder,
    "cips": _cips,
}


def register(name, builder):
  GENERATORS[name] = builder


def build_generator(model_config: ml_collections.ConfigDict, dtype=None):
  """Builds the Flax generator named `model_config.name` with its other fields."""
  kwargs = dict(model_config)
  name = kwargs.pop("name")
  dtype = dtype or kwargs.pop("dtype", "float32")
  kwargs.pop("dtype", None)
  if name not in GENERATORS:
    raise ValueError(f"unknown model {name!r}; known: {sorted(GENERATORS)}")
  return GENERATORS[name](model_config, dtype=DTYPES[dtype] if isinstance(dtype, str) else dtype,
                          **kwargs)
