"""The reference's KPDetector state_dict -> mmfa_jax ``KPDetector`` variables.

Torch names: ``predictor.down_blocks.down{i}.*``, ``predictor.conv.*``, ``predictor.up_blocks.up{i}.*``,
``kp.*``, plus the deterministic anti-alias buffer ``down.weight`` (recomputed, not loaded).
"""

from __future__ import annotations

from pretrained_converters.common import BATCH_COUNTER, NameMap

NAMES = NameMap(
  renames=((r"(down|up)_blocks_(\d+)", r"\1_blocks.\1\2"),),  # down_blocks_0 -> down_blocks.down0
  ignore=(BATCH_COUNTER, r"^down\.weight$"),
)
convert = NAMES.converter("kp_detector")
