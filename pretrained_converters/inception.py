"""pytorch-fid's FID Inception weights (``pt_inception-2015-12-05-6726825d.pth``) -> mmfa_jax
``FIDInception`` variables.

The file is the state_dict of torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` with
the FID blocks: ``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ... The Flax
module names are the PyTorch attribute names, so the naming is one to one; the classifier
``fc.{weight,bias}`` (1008 x 2048, unused by the pool features) and BatchNorm's
``num_batches_tracked`` may stay unused. ``SPEC`` is the ``inception`` kind of
``tools/convert_torch_weights.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.models.inception import INCEPTION_SIZE, FIDInception
from pretrained_converters.common import (
  BATCH_COUNTER,
  NameMap,
  read_weights_file,
  state_dict_entry,
)
from pretrained_converters.spec import Conversion, ConverterSpec

NAMES = NameMap(renames=(), ignore=(BATCH_COUNTER, r"^fc\."))
convert_state_dict = NAMES.converter("pytorch-fid inception")

VERIFY_SHAPE = (2, 75, 75, 3)  # (B, H, W, 3) random images of ``--verify`` (resized to 299 inside)


def inception_template() -> Any:
  """Shapes of ``FIDInception`` variables (``{'params', 'batch_stats'}``, ``jax.ShapeDtypeStruct``
  leaves); nothing is initialised."""
  images = jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInception().init, jax.random.key(0), images)


def convert_inception(
  path: str | os.PathLike, report: dict[str, Any] | None = None
) -> dict[str, Any]:
  """The pytorch-fid ``.pth`` at ``path`` -> ``FIDInception`` variables (float32 numpy leaves).

  ``report`` (optional dict) receives ``tensors``, ``parameters`` and ``ignored`` (the file keys
  left unused: ``fc.*``, ``*.num_batches_tracked``).

  Raises:
    CheckpointError: naming ``path``: unreadable or truncated file, missing tensors, shape
      mismatches or unexpected keys (all of them in one message).
  """
  path = os.fspath(path)
  state_dict = state_dict_entry(read_weights_file(path), path)
  return convert_state_dict(state_dict, inception_template(), source=path, report=report)


def _convert_file(path: str, config: Any, generator: str) -> Conversion:
  del config, generator  # a fixed network
  report: dict[str, Any] = {}
  variables = convert_inception(path, report)
  rows = [("inception", report["tensors"], report["parameters"])]
  return Conversion("inception", variables, rows, report["ignored"])


def _verify(
  load: Callable, rng: Any, variables: Mapping[str, Any], config: Any, generator: str
) -> dict[str, float]:
  """Pool features of the converted network vs the file in ``torch_inception.FIDInceptionV3``, on
  random ``VERIFY_SHAPE`` images, relative to the largest PyTorch feature (at least 1)."""
  import torch

  from pretrained_converters.torch_inception import FIDInceptionV3

  images = rng.random(VERIFY_SHAPE, dtype=np.float32)  # (B, H, W, 3) in [0, 1)
  twin = load(FIDInceptionV3())  # strict: the file also holds fc
  want = twin(torch.from_numpy(images).permute(0, 3, 1, 2)).double().numpy()  # (B, 2048)
  got = np.asarray(jax.jit(FIDInception().apply)(variables, images), np.float64)  # (B, 2048)
  scale = max(1.0, float(np.max(np.abs(want))))
  return {"pool features (relative)": float(np.max(np.abs(got - want))) / scale}


SPEC = ConverterSpec(
  kind="inception",
  description=(
    "pytorch-fid's FID Inception state_dict (pt_inception-2015-12-05-6726825d.pth) -> "
    "FIDInception (2048-d pool features)"
  ),
  tolerance=1e-4,
  convert=_convert_file,
  verify=_verify,
)
