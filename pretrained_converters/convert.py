"""Whole-file conversions behind ``tools/convert_torch_weights.py``: one function per KIND.

* ``hopenet``: deep-head-pose's state_dict (e.g. ``hopenet_robust_alpha1.pkl``) -> ``Hopenet``.
* ``vgg19``: torchvision-layout VGG19 state_dict (``features.N.weight`` ...) -> ``VGG19``.
* ``vggface``: ``vgg_face_dag`` state_dict -> ``VGGFace``.
* ``face_vid2vid``: the reference's training checkpoint (a dict with ``kp_detector``,
  ``he_estimator``, ``generator``, ``discriminator``, optimizer entries and ``epoch``) ->
  ``{'model': AnimationModel variables, 'discriminator': MultiScaleDiscriminator variables}``.

``verify`` rebuilds the PyTorch definition (``torch_reference``), loads the file into it, runs both
on a fixed random input and returns the max absolute difference per output.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.models import (
  VGG19,
  Hopenet,
  MultiScaleDiscriminator,
  VGGFace,
  animation_model_from_config,
)
from mmfa_jax.models.discriminator import scale_name
from mmfa_jax.models.hopenet import HOPENET_SIZE
from pretrained_converters import he_estimator, hopenet, keypoint_detector, synthesis
from pretrained_converters.common import CheckpointError, read_weights_file, state_dict_entry
from pretrained_converters.motion import assemble

KINDS = ("hopenet", "vgg19", "vggface", "face_vid2vid")
TOLERANCE = {"hopenet": 1e-4, "vgg19": 1e-4, "vggface": 1e-4, "face_vid2vid": 1e-3}


@dataclasses.dataclass
class Conversion:
  """Converted variables and what was mapped: ``rows`` of (network, tensors, parameters)."""

  kind: str
  variables: dict[str, Any]
  rows: list[tuple[str, int, int]]
  ignored: list[str]


def _template(module: Any, *args: Any) -> Any:
  return jax.eval_shape(lambda key, *a: module.init(key, *a), jax.random.key(0), *args)


def _image(size: int, batch: int = 1) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


def _sub(template: Mapping[str, Any], *path: str) -> dict[str, Any]:
  """The part of a variables template under a module path, for every collection that has it."""
  out = {}
  for collection, tree in template.items():
    for name in path:
      tree = tree.get(name) if isinstance(tree, Mapping) else None
    if tree is not None:
      out[collection] = tree
  return out


def _single(kind: str, path: str, converter: Any, module: Any, size: int) -> Conversion:
  report: dict[str, Any] = {}
  state_dict = state_dict_entry(read_weights_file(path), path)
  variables = converter(state_dict, _template(module, _image(size)), source=path, report=report)
  return Conversion(
    kind, variables, [(kind, report["tensors"], report["parameters"])], report["ignored"]
  )


def face_vid2vid_model(config: Any, generator: str) -> Any:
  """The ``AnimationModel`` a face-vid2vid checkpoint converts into (variant face_vid2vid)."""
  model_config = config.model
  with model_config.unlocked():
    model_config.variant = "face_vid2vid"
    model_config.generator.kind = generator
  return animation_model_from_config(model_config)


def convert_face_vid2vid(path: str, config: Any, generator: str = "spade") -> Conversion:
  """The reference's training checkpoint -> ``{'model': ..., 'discriminator': ...}`` variables."""
  if generator not in ("spade", "original"):
    raise CheckpointError(f"--generator must be 'spade' or 'original', got {generator!r}")
  loaded = read_weights_file(path)
  model = face_vid2vid_model(config, generator)
  size = config.image_size
  template = _template(model, _image(size), _image(size))
  disc_config = dict(config.model.discriminator)
  discriminator = MultiScaleDiscriminator(**disc_config)
  disc_template = _template(discriminator, {float(s): _image(size) for s in disc_config["scales"]})

  parts = [
    ("kp_detector", keypoint_detector.convert, ("motion_estimator", "kp")),
    ("he_estimator", he_estimator.convert, ("motion_estimator", "he")),
    ("generator", synthesis.convert_generator, ("image_generator",)),
  ]
  converted: dict[str, Any] = {}
  rows, ignored, problems = [], [], []
  for entry, converter, target in parts:
    report: dict[str, Any] = {}
    try:
      state_dict = state_dict_entry(loaded, path, entry)
      converted[target] = converter(
        state_dict, _sub(template, *target), source=f"{path}[{entry}]", report=report
      )
    except CheckpointError as error:
      problems.append(str(error))
      continue
    rows.append((entry, report["tensors"], report["parameters"]))
    ignored += [f"{entry}.{k}" for k in report["ignored"]]
  disc_variables = None
  if "discriminator" in loaded or any(k.startswith("discriminator.") for k in loaded):
    report = {}
    try:
      disc_variables = synthesis.convert_discriminator(
        state_dict_entry(loaded, path, "discriminator"),
        disc_template,
        source=f"{path}[discriminator]",
        report=report,
      )
      rows.append(("discriminator", report["tensors"], report["parameters"]))
    except CheckpointError as error:
      problems.append(str(error))
  if problems:
    raise CheckpointError("\n".join(problems))
  motion = assemble(
    {"kp": converted[("motion_estimator", "kp")], "he": converted[("motion_estimator", "he")]}
  )
  variables = {
    "model": assemble(
      {"motion_estimator": motion, "image_generator": converted[("image_generator",)]}
    )
  }
  if disc_variables is not None:
    variables["discriminator"] = disc_variables
  return Conversion("face_vid2vid", variables, rows, ignored)


def convert_file(
  kind: str, path: str | os.PathLike, *, config: Any = None, generator: str = "spade"
) -> Conversion:
  """Converts one upstream file of ``kind``; raises ``CheckpointError`` with every problem."""
  path = os.fspath(path)
  if kind == "hopenet":
    return _single(kind, path, hopenet.convert, Hopenet(), HOPENET_SIZE)
  if kind == "vgg19":
    return _single(kind, path, synthesis.convert_vgg19, VGG19(), 64)
  if kind == "vggface":
    return _single(kind, path, synthesis.convert_vggface, VGGFace(), 64)
  if kind == "face_vid2vid":
    if config is None:
      raise CheckpointError("face_vid2vid needs a config (e.g. configs/vox_face_vid2vid.py)")
    return convert_face_vid2vid(path, config, generator)
  raise CheckpointError(f"unknown KIND {kind!r}; choose one of {', '.join(KINDS)}")


def _max_diff(got: Any, want: Any) -> float:
  return float(np.max(np.abs(np.asarray(got, np.float64) - want.detach().double().numpy())))


def verify(
  kind: str,
  path: str | os.PathLike,
  variables: Mapping[str, Any],
  *,
  config: Any = None,
  generator: str = "spade",
) -> dict[str, float]:
  """Max absolute difference per output between the converted Flax network and the file loaded
  into the PyTorch definition, on a fixed random input (seed 0)."""
  import torch

  from pretrained_converters import torch_reference as ref

  path = os.fspath(path)
  loaded = read_weights_file(path)
  rng = np.random.default_rng(0)

  def load(module: Any, entry: str | None = None, strict: bool = True) -> Any:
    state = {
      k: torch.from_numpy(np.array(v)) for k, v in state_dict_entry(loaded, path, entry).items()
    }
    module.load_state_dict(state, strict=strict)
    return module.eval()

  diffs: dict[str, float] = {}
  with torch.no_grad():
    if kind == "hopenet":
      prepared = rng.normal(size=(1, HOPENET_SIZE, HOPENET_SIZE, 3)).astype(np.float32)
      got = Hopenet().apply(variables, prepared)
      want = load(ref.Hopenet())(torch.from_numpy(prepared).permute(0, 3, 1, 2))
      for name, value in zip(("yaw", "pitch", "roll"), want):
        diffs[name] = _max_diff(got[name], value)
    elif kind in ("vgg19", "vggface"):
      images = rng.random((1, 64, 64, 3), dtype=np.float32)
      module = ref.VGG19() if kind == "vgg19" else ref.VGGFaceDag()
      model = VGG19() if kind == "vgg19" else VGGFace()
      torch_module = load(module, strict=kind == "vggface")
      got = model.apply(variables, images)
      want = torch_module(torch.from_numpy(images).permute(0, 3, 1, 2))
      for i, (g, w) in enumerate(zip(got, want)):
        diffs[f"relu{i + 1}_1 (relative)"] = _max_diff(g, w.permute(0, 2, 3, 1)) / max(
          1.0, float(w.abs().max())
        )
    elif kind == "face_vid2vid":
      modules = ref.face_vid2vid_modules(config.model, generator)
      for entry in ("kp_detector", "he_estimator", "generator"):
        load(modules[entry], entry)
      size = config.image_size
      source = rng.random((1, size, size, 3), dtype=np.float32)
      driving = rng.random((1, size, size, 3), dtype=np.float32)
      model = face_vid2vid_model(config, generator)
      got = jax.jit(model.apply)(variables["model"], source, driving)["prediction"]
      want = ref.animate_face_vid2vid(
        modules,
        torch.from_numpy(source).permute(0, 3, 1, 2),
        torch.from_numpy(driving).permute(0, 3, 1, 2),
      )
      diffs["animation prediction"] = _max_diff(got, want.permute(0, 2, 3, 1))
      if "discriminator" in variables:
        disc = load(modules["discriminator"], "discriminator")
        scales = [float(s) for s in config.model.discriminator.scales]
        got_disc = MultiScaleDiscriminator(**dict(config.model.discriminator)).apply(
          variables["discriminator"], {s: source for s in scales}
        )
        want_disc = disc(
          {scale_name(s): torch.from_numpy(source).permute(0, 3, 1, 2) for s in scales}
        )
        for s in scales:
          diffs[f"discriminator {scale_name(s)} prediction"] = _max_diff(
            got_disc[s][1], want_disc[scale_name(s)][1].permute(0, 2, 3, 1)
          )
    else:
      raise CheckpointError(f"unknown KIND {kind!r}")
  return diffs
