"""State_dicts of MMFA's motion heads and the dense motion network -> mmfa_jax variables.

``ScaleTranslationHead`` keeps the HEEstimator trunk names at the top level in PyTorch (as in a
reference HEEstimator, so a face-vid2vid checkpoint's trunk and ``fc_t`` can warm-start it);
``ExpressionEncoder``, ``ExpressionDecoder`` and ``DenseMotionNetwork`` map name for name
(``hourglass.encoder.down_blocks.{i}``, ``hourglass.decoder.up_blocks.{i}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pretrained_converters.common import DEFAULT_NAMES, NameMap

convert_scale_translation = NameMap(renames=(("trunk", ""),)).converter("scale_translation")
convert_by_name = DEFAULT_NAMES.converter("state_dict")  # encoder, decoder, dense motion


def assemble(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """``{submodule_name: {'params': ..., 'batch_stats': ...}}`` -> one variables dict whose
  collections hold each part under its submodule name (e.g. a ``MotionEstimator``'s ``kp``)."""
  variables: dict[str, dict[str, Any]] = {}
  for name, part in parts.items():
    for collection, tree in part.items():
      variables.setdefault(collection, {})[name] = tree
  return variables
