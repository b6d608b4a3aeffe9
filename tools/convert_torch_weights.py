"""Converts PyTorch weight files into mmfa_jax checkpoints (orbax arrays + metadata.json).

  python tools/convert_torch_weights.py KIND --input FILE --output DIR [--verify] [--overwrite]
      [--generator spade|original] [--config configs/vox_face_vid2vid.py] [--config.image_size=...]

FILE: .pth / .pth.tar / .pkl (read with ``torch.load(weights_only=True)``), .safetensors or .npz.
Exit codes: 0 done, 1 --verify found a difference above tolerance, 2 bad input (nothing is
written). KIND, one of the converter registry (``pretrained_converters.convert.CONVERTERS``):
"""

from __future__ import annotations

import importlib
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from mmfa_jax.checkpoints import ConvertedWeightsError, file_sha256, save_converted
from mmfa_jax.cli import output_folder_problem
from pretrained_converters.common import CheckpointError
from pretrained_converters.convert import CONVERTERS, convert_file, verify

__doc__ += "".join(
  f"  {spec.kind:<13} {spec.description} (--verify tolerance {spec.tolerance:g})\n"
  for spec in CONVERTERS.values()
)
_CONFIGURED = ", ".join(kind for kind, spec in CONVERTERS.items() if spec.config)

_INPUT = flags.DEFINE_string(
  "input", None, "Upstream weights file (lpips: ALEXNET_PTH,LINEAR_PTH)."
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Directory to write (must not exist unless --overwrite)."
)
_GENERATOR = flags.DEFINE_enum(
  "generator", "spade", ["spade", "original"], f"Generator of the model ({_CONFIGURED})."
)
_VERIFY = flags.DEFINE_bool(
  "verify", False, "Compare with the PyTorch definition on a random input."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output directory.")
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, f"Config the model belongs to ({_CONFIGURED}; default: the kind's own)."
)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _config_for(kind: str):
  default = CONVERTERS[kind].config  # e.g. configs/vox_face_vid2vid.py
  if default is None:
    return None, None
  if _CONFIG.value is not None:
    return _CONFIG.value, config_flags.get_config_filename(flags.FLAGS["config"])
  module = importlib.import_module(default.removesuffix(".py").replace("/", "."))
  return module.get_config(), default


def main(argv: list[str]) -> None:
  if len(argv) != 2 or argv[1] not in CONVERTERS:
    _fail(f"give exactly one KIND out of {', '.join(CONVERTERS)} (got {argv[1:]})")
  kind = argv[1]
  if not _INPUT.value or not _OUTPUT.value:
    _fail("--input FILE and --output DIR are required")
  if os.path.exists(_OUTPUT.value) and not _OVERWRITE.value:
    _fail(f"{_OUTPUT.value}: already exists (pass --overwrite to replace it)")
  problem = output_folder_problem(_OUTPUT.value)
  if problem:
    _fail(problem)
  config, config_name = _config_for(kind)
  try:
    conversion = convert_file(kind, _INPUT.value, config=config, generator=_GENERATOR.value)
  except CheckpointError as error:
    detail = str(error).strip().replace("\n", "; ")
    _fail(f"{_INPUT.value} is not a usable {kind} file: {detail}")

  print(f"{'network':<16} {'tensors':>8} {'parameters':>14}")
  for network, tensors, parameters in conversion.rows:
    print(f"{network:<16} {tensors:>8} {parameters:>14,}")
  counters = [k for k in conversion.ignored if k.endswith("num_batches_tracked")]
  others = [k for k in conversion.ignored if not k.endswith("num_batches_tracked")]
  if counters:
    print(f"skipped {len(counters)} BatchNorm num_batches_tracked counters")
  if others:
    shown = ", ".join(others[:8]) + (" ..." if len(others) > 8 else "")
    print(f"not needed, skipped ({len(others)}): {shown}")

  failed = False
  if _VERIFY.value:
    diffs = verify(
      kind, _INPUT.value, conversion.variables, config=config, generator=_GENERATOR.value
    )
    tolerance = CONVERTERS[kind].tolerance
    print(f"--verify: max |flax - torch| on a fixed random input (tolerance {tolerance:g})")
    for name, value in diffs.items():
      mark = "ok" if value <= tolerance else "TOO LARGE"
      print(f"  {name:<36} {value:.3e}  {mark}")
    failed = not all(value <= tolerance for value in diffs.values())  # NaN fails too
    if failed:
      print("error: verification failed; nothing written", file=sys.stderr)
      sys.exit(1)

  files = CONVERTERS[kind].input_files(_INPUT.value)  # lpips: two files
  metadata = {
    "kind": kind,
    "source_file": ",".join(os.path.basename(f) for f in files),
    "source_sha256": ",".join(file_sha256(f) for f in files),
    "config": config_name,
    "generator": _GENERATOR.value if config is not None else None,
  }
  if config is not None:  # what mmfa_jax.inference.Animator rebuilds the model from
    metadata["model_config"] = config.model.to_json()
    metadata["image_size"] = int(config.image_size)
  try:
    written = save_converted(
      _OUTPUT.value, conversion.variables, metadata, overwrite=_OVERWRITE.value
    )
  except ConvertedWeightsError as error:
    _fail(str(error))
  print(f"wrote {written}")


if __name__ == "__main__":
  app.run(main)
