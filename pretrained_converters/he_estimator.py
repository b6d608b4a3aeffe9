"""The reference's HEEstimator state_dict -> mmfa_jax ``HEEstimator`` variables.

The trunk's modules sit at the top level of the torch module (``conv1``, ``block1.b1_0``, ...) and
under ``trunk`` in Flax. The reference's heads are misnamed (its issue #58): its ``fc_roll`` is
trained to predict **yaw** and its ``fc_yaw`` roll, so they are swapped here, and ``fc_yaw`` in
mmfa_jax predicts yaw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pretrained_converters.common import convert_state_dict

_HEAD_SWAP = {"fc_yaw": "fc_roll", "fc_roll": "fc_yaw"}


def torch_prefix(module_path: tuple[str, ...]) -> str:
  if module_path[0] == "trunk":
    return ".".join(module_path[1:])
  return ".".join((_HEAD_SWAP.get(module_path[0], module_path[0]), *module_path[1:]))


def convert(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "he_estimator",
  report: dict | None = None,
) -> dict:
  """Returns ``{'params', 'batch_stats'}`` for ``HEEstimator`` shaped like ``template``."""
  return convert_state_dict(
    state_dict, template, torch_prefix=torch_prefix, source=source, report=report
  )
