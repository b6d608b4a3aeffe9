"""Whole-file conversions behind ``tools/convert_torch_weights.py``: the converter registry.

``CONVERTERS`` maps each KIND (``hopenet``, ``vgg19``, ``vggface``, ``face_vid2vid``, ``lpips``,
``inception``) to its ``ConverterSpec`` (``spec.py``; the evaluation networks' specs live in
``lpips.py`` and ``inception.py``): what the upstream file is, the ``--verify`` tolerance, how to convert it and how
to check it. The tool, its help text, ``convert_file`` and ``verify`` read it and nothing else, so
adding a kind is adding one entry. A face-vid2vid training checkpoint (a dict with
``kp_detector``, ``he_estimator``, ``generator``, ``discriminator``, optimizer entries and
``epoch``) becomes ``{'model': AnimationModel variables, 'discriminator': MultiScaleDiscriminator
variables}``.

``verify`` rebuilds the PyTorch definition (``torch_reference``), loads the file into it, runs both
on a fixed random input and returns the max absolute difference per output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
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
from mmfa_jax.models.variants import FaceVid2Vid
from pretrained_converters import (
  he_estimator,
  hopenet,
  inception,
  keypoint_detector,
  lpips,
  synthesis,
)
from pretrained_converters.common import CheckpointError, read_weights_file, state_dict_entry
from pretrained_converters.motion import assemble
from pretrained_converters.spec import Conversion, ConverterSpec

VGG_SIZE = 64  # image size VGG19 / VGG-Face are converted and checked at


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


def _one_network(kind: str, network: type, converter: Callable, size: int) -> Callable:
  """``ConverterSpec.convert`` of a kind that is one network: the file's state_dict -> variables of
  ``network()`` at ``size`` x ``size`` images."""

  def convert(path: str, config: Any, generator: str) -> Conversion:
    del config, generator  # a fixed network
    report: dict[str, Any] = {}
    state_dict = state_dict_entry(read_weights_file(path), path)
    template = _template(network(), _image(size))
    variables = converter(state_dict, template, source=path, report=report)
    rows = [(kind, report["tensors"], report["parameters"])]
    return Conversion(kind, variables, rows, report["ignored"])

  return convert


def face_vid2vid_model(config: Any, generator: str) -> Any:
  """The ``AnimationModel`` a face-vid2vid checkpoint converts into (variant face_vid2vid)."""
  model_config = config.model
  with model_config.unlocked():
    model_config.variant = FaceVid2Vid.name
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


def _convert_face_vid2vid(path: str, config: Any, generator: str) -> Conversion:
  if config is None:
    raise CheckpointError("face_vid2vid needs a config (e.g. configs/vox_face_vid2vid.py)")
  return convert_face_vid2vid(path, config, generator)


def _channels_first(images: np.ndarray) -> Any:
  import torch

  return torch.from_numpy(images).permute(0, 3, 1, 2)


def _max_diff(got: Any, want: Any) -> float:
  return float(np.max(np.abs(np.asarray(got, np.float64) - want.detach().double().numpy())))


def _verify_hopenet(
  load: Callable, rng: Any, variables: Any, config: Any, generator: str
) -> dict[str, float]:
  from pretrained_converters import torch_reference as ref

  prepared = rng.normal(size=(1, HOPENET_SIZE, HOPENET_SIZE, 3)).astype(np.float32)
  got = Hopenet().apply(variables, prepared)
  want = load(ref.Hopenet())(_channels_first(prepared))
  return {name: _max_diff(got[name], value) for name, value in zip(("yaw", "pitch", "roll"), want)}


def _verify_vgg(network: type, twin: str, strict: bool) -> Callable:
  """``ConverterSpec.verify`` of VGG19 / VGG-Face: each relu{i}_1 output, relative to its largest
  value (``twin``: the ``torch_reference`` class; ``strict``: the file holds nothing else)."""

  def verify(
    load: Callable, rng: Any, variables: Any, config: Any, generator: str
  ) -> dict[str, float]:
    from pretrained_converters import torch_reference as ref

    images = rng.random((1, VGG_SIZE, VGG_SIZE, 3), dtype=np.float32)
    torch_module = load(getattr(ref, twin)(), strict=strict)
    got = network().apply(variables, images)
    want = torch_module(_channels_first(images))
    diffs = {}
    for i, (g, w) in enumerate(zip(got, want)):
      scale = max(1.0, float(w.abs().max()))
      diffs[f"relu{i + 1}_1 (relative)"] = _max_diff(g, w.permute(0, 2, 3, 1)) / scale
    return diffs

  return verify


def _verify_face_vid2vid(
  load: Callable, rng: Any, variables: Any, config: Any, generator: str
) -> dict[str, float]:
  from pretrained_converters import torch_reference as ref

  diffs: dict[str, float] = {}
  modules = ref.face_vid2vid_modules(config.model, generator)
  for entry in ("kp_detector", "he_estimator", "generator"):
    load(modules[entry], entry)
  size = config.image_size
  source = rng.random((1, size, size, 3), dtype=np.float32)
  driving = rng.random((1, size, size, 3), dtype=np.float32)
  model = face_vid2vid_model(config, generator)
  got = jax.jit(model.apply)(variables["model"], source, driving)["prediction"]
  want = ref.animate_face_vid2vid(modules, _channels_first(source), _channels_first(driving))
  diffs["animation prediction"] = _max_diff(got, want.permute(0, 2, 3, 1))
  if "discriminator" in variables:
    disc = load(modules["discriminator"], "discriminator")
    scales = [float(s) for s in config.model.discriminator.scales]
    got_disc = MultiScaleDiscriminator(**dict(config.model.discriminator)).apply(
      variables["discriminator"], {s: source for s in scales}
    )
    want_disc = disc({scale_name(s): _channels_first(source) for s in scales})
    for s in scales:
      diffs[f"discriminator {scale_name(s)} prediction"] = _max_diff(
        got_disc[s][1], want_disc[scale_name(s)][1].permute(0, 2, 3, 1)
      )
  return diffs


CONVERTERS: dict[str, ConverterSpec] = {
  spec.kind: spec
  for spec in (
    ConverterSpec(
      kind="hopenet",
      description="deep-head-pose's state_dict (hopenet_robust_alpha1.pkl) -> Hopenet",
      tolerance=1e-4,
      convert=_one_network("hopenet", Hopenet, hopenet.convert, HOPENET_SIZE),
      verify=_verify_hopenet,
    ),
    ConverterSpec(
      kind="vgg19",
      description="torchvision VGG19 state_dict (vgg19-dcbb9e9d.pth) -> VGG19",
      tolerance=1e-4,
      convert=_one_network("vgg19", VGG19, synthesis.convert_vgg19, VGG_SIZE),
      verify=_verify_vgg(VGG19, "VGG19", strict=False),
    ),
    ConverterSpec(
      kind="vggface",
      description="vgg_face_dag state_dict (vgg_face_dag.pth) -> VGGFace",
      tolerance=1e-4,
      convert=_one_network("vggface", VGGFace, synthesis.convert_vggface, VGG_SIZE),
      verify=_verify_vgg(VGGFace, "VGGFaceDag", strict=True),
    ),
    ConverterSpec(
      kind="face_vid2vid",
      description=(
        "the reference's training checkpoint (00000099-checkpoint.pth.tar) -> "
        "{'model': AnimationModel, 'discriminator': MultiScaleDiscriminator}"
      ),
      tolerance=1e-3,
      convert=_convert_face_vid2vid,
      verify=_verify_face_vid2vid,
      config="configs/vox_face_vid2vid.py",
    ),
    lpips.SPEC,
    inception.SPEC,
  )
}


def converter_spec(kind: str) -> ConverterSpec:
  """``CONVERTERS[kind]``; raises ``CheckpointError`` naming the kinds there are."""
  if kind not in CONVERTERS:
    raise CheckpointError(f"unknown KIND {kind!r}; choose one of {', '.join(CONVERTERS)}")
  return CONVERTERS[kind]


def convert_file(
  kind: str, path: str | os.PathLike, *, config: Any = None, generator: str = "spade"
) -> Conversion:
  """Converts one upstream file of ``kind``; raises ``CheckpointError`` with every problem."""
  return converter_spec(kind).convert(os.fspath(path), config, generator)


def verify(
  kind: str,
  path: str | os.PathLike,
  variables: Mapping[str, Any],
  *,
  config: Any = None,
  generator: str = "spade",
) -> dict[str, float]:
  """Max absolute difference per output between the converted Flax network and the file loaded
  into the PyTorch definition, on a fixed random input (seed 0); ``CONVERTERS[kind].tolerance``
  bounds them."""
  import torch

  spec = converter_spec(kind)
  path = os.fspath(path)
  loaded = spec.read(path)

  def load(module: Any, entry: str | None = None, strict: bool = True) -> Any:
    state = {
      k: torch.from_numpy(np.array(v)) for k, v in state_dict_entry(loaded, path, entry).items()
    }
    module.load_state_dict(state, strict=strict)
    return module.eval()

  with torch.no_grad():
    return spec.verify(load, np.random.default_rng(0), variables, config, generator)
