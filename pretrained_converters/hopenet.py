"""deep-head-pose's Hopenet state_dict -> mmfa_jax ``Hopenet`` variables.

Torch names follow torchvision's ResNet: ``layer{L}.{b}.conv1`` ..., ``layer{L}.0.downsample.0``
(conv) and ``.downsample.1`` (BN); heads ``fc_yaw``, ``fc_pitch``, ``fc_roll``. The unused
``fc_finetune`` is skipped; old pickles without ``num_batches_tracked`` are fine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pretrained_converters.common import convert_state_dict

_DOWNSAMPLE = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}


def torch_prefix(module_path: tuple[str, ...]) -> str:
  parts = []
  for name in module_path:
    match = re.fullmatch(r"(layer\d)_(\d+)", name)
    parts.append(f"{match[1]}.{match[2]}" if match else _DOWNSAMPLE.get(name, name))
  return ".".join(parts)


def convert(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "hopenet",
  report: dict | None = None,
) -> dict:
  """Returns ``{'params', 'batch_stats'}`` for ``Hopenet`` shaped like ``template``."""
  return convert_state_dict(
    state_dict,
    template,
    torch_prefix=torch_prefix,
    ignore=(r"(^|\.)num_batches_tracked$", r"^fc_finetune\."),
    source=source,
    report=report,
  )
