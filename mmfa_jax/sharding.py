"""The device mesh and shardings of training: a 1-D ``data`` mesh, batches sharded along it,
states and frozen networks replicated; host <-> device helpers that work across processes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices of all processes (0: all)."""
  devices = jax.devices()
  count = num_devices or len(devices)
  if count > len(devices):
    raise ValueError(f"train.num_devices={count} but only {len(devices)} devices are visible")
  return jax.make_mesh((count,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of an array sharded on the data axis (in batch order), on the host."""
  shards = {}
  for shard in array.addressable_shards:
    start = (shard.index[0].start or 0) if shard.index else 0
    shards.setdefault(start, shard)  # replicas of one row block: keep the first
  return np.concatenate([np.asarray(shards[start].data) for start in sorted(shards)], axis=0)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same in every process) -> arrays replicated over ``mesh``.

  Unlike ``jax.device_put`` this works when the mesh spans several processes (each builds the
  shards on its own devices). PRNG key arrays are moved as their key data.
  """
  sharding = replicated(mesh)

  def put(value: Any) -> Any:
    if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
      return value
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(
        put(jax.random.key_data(value)), impl=jax.random.key_impl(value)
      )
    host = np.asarray(jax.device_get(value))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)
