"""What the benchmarks share: peak memory and the JSON-lines record."""

from __future__ import annotations

import importlib
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


def load_config(name: str):
  """``configs.<module>.get_config()`` of a benchmark's ``--config``: ``module`` or
  ``module:argument`` (``synthetic:tiny:face_vid2vid`` passes ``tiny:face_vid2vid``)."""
  module, _, argument = name.partition(":")
  get_config = importlib.import_module(f"configs.{module}").get_config
  return get_config(argument) if argument else get_config()


def random_model(config, seed: int = 0) -> tuple[dict, dict]:
  """``(variables, frozen)`` of ``config.model``'s animation model, made without compiling: the
  model's initial variables and random variables of the frozen networks it reads (the MMFA
  Hopenet; the values do not change the cost)."""
  import numpy as np

  from mmfa_jax.initialization import init_variables
  from mmfa_jax.models import Hopenet, animation_model_from_config, variant_from_config
  from mmfa_jax.models.motion import zero_head_pose

  size = config.image_size
  image = np.zeros((1, size, size, 3), np.float32)
  poses = (zero_head_pose(1), zero_head_pose(1))
  model = animation_model_from_config(config.model)
  variables = init_variables(model, seed, image, image, False, poses)
  frozen = {}
  if variant_from_config(config.model).frozen_pose:
    hopenet = Hopenet(**dict(config.model.hopenet))
    frozen["hopenet"] = init_variables(hopenet, seed, np.zeros((1, 224, 224, 3), np.float32))
  return variables, frozen
