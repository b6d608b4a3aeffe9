"""Prints parameter counts and output shapes of the networks of a config (traced, no compute).

  python tools/model_summary.py --config=configs/vox.py [--config.model.num_kp=20]

Where the PyTorch reference has the same network, its parameter count is printed beside ours.
"""

from __future__ import annotations

import sys

from absl import app
from ml_collections import config_flags

from mmfa_jax.config_checks import config_flags_parser
from mmfa_jax.models.summary import REFERENCE_PARAM_COUNTS, summarise_networks

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  if config is None:
    print("error: --config is required, e.g. --config=configs/vox.py", file=sys.stderr)
    sys.exit(2)
  summary = summarise_networks(config)
  print(
    f"{'network':<20} {'params':>12} {'reference':>12}  outputs (batch 1, {config.image_size} px)"
  )
  for name, info in summary.items():
    reference = REFERENCE_PARAM_COUNTS.get(name)
    ref_text = f"{reference:>12,}" if reference is not None else f"{'-':>12}"
    mark = "" if reference is None else ("  ok" if reference == info["params"] else "  DIFFERS")
    outputs = info["outputs"]
    shapes = (
      ", ".join(f"{k} {v}" for k, v in outputs.items())
      if isinstance(outputs, dict)
      else str(outputs)
    )
    print(f"{name:<20} {info['params']:>12,} {ref_text}{mark}  {shapes}")
  print("hopenet reference count excludes its unused fc_finetune (6,156 parameters).")


if __name__ == "__main__":
  app.run(main, flags_parser=config_flags_parser(_CONFIG))
