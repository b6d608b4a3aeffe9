"""What the benchmarks share: peak memory and the JSON-lines record."""

from __future__ import annotations

import json
import resource


def peak_memory_gib() -> tuple[float, str]:
  """(GiB, kind): the first device's peak bytes in use, or this process's peak RSS on CPU."""
  import jax

  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30, "device"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "host RSS"


def append_json(path: str | None, record: dict) -> None:
  """Appends ``record`` as one JSON line to ``path`` (nothing when ``path`` is None)."""
  if path:
    with open(path, "a") as handle:
      handle.write(json.dumps(record) + "\n")
