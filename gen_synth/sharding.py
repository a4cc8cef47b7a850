"""Device mesh and shardings: data parallel over a 'data' axis, optional FSDP.

The mesh has one axis, 'data', over every device of every process. Batches
are sharded over it; parameters and optimiser states are replicated, or with
FSDP each array's largest dimension divisible by the axis size is sharded
over it (arrays without one stay replicated).
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def make_mesh(num_devices=None) -> jax.sharding.Mesh:
  n = num_devices or jax.device_count()
  # Auto axes: jit propagates shardings from the annotated inputs/outputs.
  return jax.make_mesh((n,), (DATA_AXIS,), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
  """[B, ...] arrays split over 'data' along B."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape, axis_size: int, min_size: int = 2 ** 14) -> P:
  """Shard the largest dimension divisible by `axis_size` (arrays >= min_size elements)."""
  if not shape or np.prod(shape) < min_size:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = DATA_AXIS
      return P(*spec)
  return P()


def state_shardings(mesh, abstract_state, fsdp: bool = False):
  """A pytree of NamedShardings shaped like `abstract_state`."""
  if not fsdp:
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)
  size = mesh.shape[DATA_AXIS]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, size)), abstract_state)
