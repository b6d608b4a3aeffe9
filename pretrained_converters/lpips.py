"""LPIPS v0.1 (AlexNet) from its two upstream files -> ``mmfa_jax.models.lpips.LPIPS`` variables.

The weights live in two files from two projects:

* torchvision's AlexNet state_dict (``alexnet-owt-7be5be79.pth``; older releases
  ``alexnet-owt-4df8aa71.pth``): ``features.{0,3,6,8,10}.{weight,bias}`` are used,
  ``classifier.*`` is not needed and skipped.
* the ``lpips`` package's ``weights/v0.1/alex.pth``: ``lin{0..4}.model.1.weight`` ``(1, C, 1, 1)``,
  nothing else.

``convert_lpips(alexnet_path, linear_path)`` takes them by name. The converter registry's single
``--input`` is the pair written ``"ALEXNET_PTH,LINEAR_PTH"`` (``input_paths`` splits it): the
order says which file is which, so no file name has to be guessed (torchvision's name changes with
its releases, the package's is a generic ``alex.pth``) and every error names the file it is about.
A directory would need such guessing, so it is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.models.lpips import LPIPS, lpips
from pretrained_converters.common import (
  CheckpointError,
  NameMap,
  read_weights_file,
  state_dict_entry,
)
from pretrained_converters.spec import Conversion, ConverterSpec

SEPARATOR = ","
TEMPLATE_SIZE = 64  # parameter shapes do not depend on the image size; any size >= 31 would do
VERIFY_SIZE = 64

# Flax ``features_{i}`` -> ``features.{i}`` (torchvision indices); the classifier is not used.
ALEXNET_NAMES = NameMap(renames=((r"features_(\d+)", r"features.\1"),), ignore=(r"^classifier\.",))
# Flax ``lin{k}`` -> ``lin{k}.model.1`` (Sequential(Dropout, Conv2d)); the file holds nothing else.
LINEAR_NAMES = NameMap(renames=((r"lin(\d+)", r"lin\1.model.1"),), ignore=())
convert_alexnet = ALEXNET_NAMES.converter("alexnet")
convert_linear = LINEAR_NAMES.converter("lpips linear layers")


def input_paths(path: str | os.PathLike) -> tuple[str, str]:
  """``"ALEXNET_PTH,LINEAR_PTH"`` -> ``(alexnet_path, linear_path)``.

  Raises:
    CheckpointError: not exactly two non-empty comma-separated paths.
  """
  text = os.fspath(path)
  parts = [part.strip() for part in text.split(SEPARATOR)]
  if len(parts) != 2 or not all(parts):
    hint = " (a directory is not accepted: name both files)" if os.path.isdir(text) else ""
    raise CheckpointError(
      f"{text}: lpips needs two files written 'ALEXNET_PTH,LINEAR_PTH' (torchvision's "
      f"alexnet-owt-*.pth, then lpips' weights/v0.1/alex.pth){hint}"
    )
  return parts[0], parts[1]


def _template() -> dict[str, Any]:
  image = jax.ShapeDtypeStruct((1, TEMPLATE_SIZE, TEMPLATE_SIZE, 3), jnp.float32)
  return jax.eval_shape(lambda key, a, b: LPIPS().init(key, a, b), jax.random.key(0), image, image)


def _read(path: str) -> dict[str, np.ndarray]:
  return state_dict_entry(read_weights_file(path), path)


def _check_not_swapped(state: dict[str, np.ndarray], path: str, holds: str, wants: str) -> None:
  names = list(state)
  if not any(n.startswith(wants) for n in names) and any(n.startswith(holds) for n in names):
    raise CheckpointError(
      f"{path}: holds {holds}* tensors where {wants}* are needed; the two files look swapped "
      "(give 'ALEXNET_PTH,LINEAR_PTH' in that order)"
    )


def convert_pair(alexnet_path: str | os.PathLike, linear_path: str | os.PathLike) -> Conversion:
  """Both files -> ``Conversion`` (``variables = {'params': ...}``, one row per file).

  Raises:
    CheckpointError: every problem of both files, each message starting with its file's path
      (unreadable, missing or unexpected tensors, shape mismatches in PyTorch layout).
  """
  alexnet_path, linear_path = os.fspath(alexnet_path), os.fspath(linear_path)
  params = _template()["params"]
  parts = (
    ("alexnet", alexnet_path, convert_alexnet, "features_", ("lin", "features.")),
    ("lpips linear", linear_path, convert_linear, "lin", ("features.", "lin")),
  )
  converted: dict[str, Any] = {}
  rows, ignored, problems = [], [], []
  for row, path, converter, prefix, (holds, wants) in parts:
    report: dict[str, Any] = {}
    template = {"params": {k: v for k, v in params.items() if k.startswith(prefix)}}
    try:
      state = _read(path)
      _check_not_swapped(state, path, holds, wants)
      converted.update(converter(state, template, source=path, report=report)["params"])
    except CheckpointError as error:
      problems.append(str(error))
      continue
    rows.append((row, report["tensors"], report["parameters"]))
    ignored += report["ignored"]
  if problems:
    raise CheckpointError("\n".join(problems))
  return Conversion("lpips", {"params": converted}, rows, ignored)


def convert_lpips(
  alexnet_path: str | os.PathLike, linear_path: str | os.PathLike
) -> dict[str, Any]:
  """torchvision AlexNet file + lpips v0.1 ``alex.pth`` -> ``LPIPS`` variables ``{'params'}``."""
  return convert_pair(alexnet_path, linear_path).variables


def read_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The ``"ALEXNET_PTH,LINEAR_PTH"`` pair as one state_dict (both files' tensors, float32
  numpy), the names ``torch_lpips.LPIPS`` loads (plus the AlexNet file's unused classifier).
  For ``--verify``, which loads the input into the PyTorch twin."""
  alexnet_path, linear_path = input_paths(path)
  merged = _read(alexnet_path)
  linear = _read(linear_path)
  shared = sorted(set(merged) & set(linear))
  if shared:
    raise CheckpointError(f"{alexnet_path} and {linear_path} both hold {', '.join(shared[:8])}")
  merged.update(linear)
  return merged


def _convert(path: str, config: Any, generator: str) -> Conversion:
  del config, generator  # a fixed network
  return convert_pair(*input_paths(path))


def _verify(
  load: Callable, rng: Any, variables: Any, config: Any, generator: str
) -> dict[str, float]:
  """Distances of two random 64x64 image pairs, against the twin loaded with ``read_state``'s
  tensors (``strict=False``: the AlexNet file's classifier has no place in it)."""
  del config, generator
  from pretrained_converters import torch_lpips

  shape = (2, VERIFY_SIZE, VERIFY_SIZE, 3)
  x = rng.random(shape, dtype=np.float32)
  y = rng.random(shape, dtype=np.float32)
  twin = load(torch_lpips.LPIPS(), strict=False)
  got = np.asarray(lpips(variables, x, y), np.float64)  # (2,)
  want = twin(*(_channels_first(a) for a in (x, y))).double().numpy()  # (2,)
  return {"distance": float(np.max(np.abs(got - want)))}


def _channels_first(images: np.ndarray) -> Any:
  """(B, H, W, C) numpy -> (B, C, H, W) torch tensor."""
  import torch

  return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


SPEC = ConverterSpec(
  kind="lpips",
  description=(
    "torchvision AlexNet (alexnet-owt-7be5be79.pth) and lpips' weights/v0.1/alex.pth, given as "
    "--input ALEXNET_PTH,LINEAR_PTH -> LPIPS"
  ),
  tolerance=1e-4,
  convert=_convert,
  verify=_verify,
  read=read_state,
  input_files=input_paths,
)
