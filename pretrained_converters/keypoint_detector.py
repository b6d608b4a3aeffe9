"""The reference's KPDetector state_dict -> mmfa_jax ``KPDetector`` variables.

Torch names: ``predictor.down_blocks.down{i}.*``, ``predictor.conv.*``, ``predictor.up_blocks.up{i}.*``,
``kp.*``, plus the deterministic anti-alias buffer ``down.weight`` (recomputed, not loaded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pretrained_converters.common import convert_state_dict


def torch_prefix(module_path: tuple[str, ...]) -> str:
  parts = []
  for name in module_path:
    for block in ("down_blocks", "up_blocks"):
      if name.startswith(f"{block}_"):
        name = f"{block}.{block.split('_')[0]}{name.rsplit('_', 1)[1]}"  # down_blocks.down0
    parts.append(name)
  return ".".join(parts)


def convert(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "kp_detector",
  report: dict | None = None,
) -> dict:
  """Returns ``{'params', 'batch_stats'}`` for ``KPDetector`` shaped like ``template``."""
  return convert_state_dict(
    state_dict,
    template,
    torch_prefix=torch_prefix,
    ignore=(r"(^|\.)num_batches_tracked$", r"^down\.weight$"),
    source=source,
    report=report,
  )
