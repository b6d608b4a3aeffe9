"""Loading an animation model for inference: ``load_model(directory)`` takes any mmfa_jax model
checkpoint and gives the model config, the variables of the ``AnimationModel``, the frozen
networks it reads (the MMFA Hopenet), the input size and, for an expression-VAE run, the VAE.

Directories it takes: a converted face-vid2vid checkpoint (``tools/convert_torch_weights.py
face_vid2vid``; ``metadata.json``), a training run's workdir (MMFA or face-vid2vid;
``config.json`` and ``checkpoints/``), an expression-VAE run's workdir (its MMFA run is loaded
with it).
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, NamedTuple

import ml_collections

from mmfa_jax.checkpoints import (
  MODEL_KIND,
  ConvertedWeightsError,
  load_converted,
  load_training_run,
  read_metadata,
  read_run_config,
  require_finite,
)
from mmfa_jax.models.expression_vae import ExpressionVAE
from mmfa_jax.models.variants import FaceVid2Vid, require_variant, variant_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CheckpointKindError(ConvertedWeightsError):
  """A directory that is not an mmfa_jax model checkpoint, or not of the variant asked for."""


class LoadedModel(NamedTuple):
  """What ``load_model`` gives: ``model_config`` (the config's ``model`` section, ``variant``
  set), ``variables`` (``{'params', 'batch_stats'}`` of the ``AnimationModel``), ``vae``
  (``(ExpressionVAE, variables)`` or None), ``image_size`` (pixels, square) and ``frozen``
  (``{kind: variables}`` of the frozen networks the model reads: ``'hopenet'`` for MMFA)."""

  model_config: ml_collections.ConfigDict
  variables: dict[str, Any]
  vae: tuple[ExpressionVAE, Any] | None
  image_size: int
  frozen: dict[str, Any]


def load_model(
  directory: str | os.PathLike,
  *,
  step: int | None = None,
  hopenet: str | os.PathLike | None = None,
  variant: str | None = None,
  averaged: bool = True,
) -> LoadedModel:
  """Loads any mmfa_jax model checkpoint (module docstring).

  ``step``: of a training run (default: the latest). MMFA runs with the frozen Hopenet take it
  from ``hopenet`` or the run's ``config.pretrained.hopenet``. ``variant`` ('mmfa' or
  'face_vid2vid'), when given, must match. ``averaged``: a training run's parameter average
  when it kept one (``optim.ema_decay`` > 0), else its last parameters.

  Raises:
    CheckpointKindError (a ``ValueError``): not an mmfa_jax model checkpoint, another variant,
      or a missing Hopenet; the message names the directory.
  """
  directory = os.fspath(directory)
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise CheckpointKindError(
      f"{directory}: a file, not a checkpoint directory (a training run's workdir or a "
      "converted model's folder)"
    )
  if not os.path.isdir(directory):
    raise CheckpointKindError(f"{directory}: no such checkpoint directory")
  if os.path.isfile(os.path.join(directory, "metadata.json")):
    loaded = _load_converted(directory)
  elif os.path.isfile(os.path.join(directory, "config.json")):
    loaded = _load_run(directory, step, hopenet, averaged)
  else:
    raise CheckpointKindError(
      f"{directory}: not an mmfa_jax checkpoint (no metadata.json of a converted model, no "
      "config.json of a training run)"
    )
  require_finite({"model": loaded.variables, "frozen": loaded.frozen}, directory)
  try:
    require_variant(loaded.model_config, variant)
  except ValueError as error:
    raise CheckpointKindError(f"{directory}: {error}") from None
  return loaded


def _config_from_file(name: str) -> ml_collections.ConfigDict:
  """``get_config()`` of a config file named in converted metadata (relative to the repository)."""
  path = name if os.path.isabs(name) else os.path.join(ROOT, name)
  spec = importlib.util.spec_from_file_location("_converted_config", path)
  if spec is None or not os.path.isfile(path):
    raise CheckpointKindError(f"the config file {name} named in the metadata is not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _load_converted(directory: str) -> LoadedModel:
  metadata = read_metadata(directory)
  if metadata.get("kind") != MODEL_KIND:
    raise CheckpointKindError(
      f"{directory}: holds converted {metadata.get('kind')!r} weights, not an animation model "
      "(convert a face-vid2vid checkpoint: tools/convert_torch_weights.py face_vid2vid)"
    )
  if metadata.get("model_config"):
    model_config = ml_collections.ConfigDict(json.loads(metadata["model_config"]))
    image_size = int(metadata["image_size"])
  else:  # written before the metadata carried the model config
    config = _config_from_file(metadata.get("config") or "configs/vox_face_vid2vid.py")
    model_config, image_size = config.model, config.image_size
  with model_config.unlocked():
    model_config.variant = FaceVid2Vid.name
    model_config.generator.kind = metadata.get("generator") or model_config.generator.kind
  variables, _ = load_converted(directory, MODEL_KIND)
  return LoadedModel(model_config, variables["model"], None, image_size, {})


def _load_run(directory: str, step: int | None, hopenet: Any, averaged: bool) -> LoadedModel:
  config = read_run_config(directory)
  vae = None
  if config.get("task", "animation") == "expression_vae":
    vae_config, vae_variables, _ = load_training_run(directory, step)
    mmfa_dir, mmfa_step = config.mmfa.workdir, config.mmfa.get("step")
    config, variables, _ = load_training_run(mmfa_dir, mmfa_step, averaged=averaged)
    feature_dim = config.model.expression_encoder.latent_dim
    vae = (
      ExpressionVAE(
        feature_dim=feature_dim,
        latent_dim=vae_config.expression_vae.latent_dim,
        hidden=tuple(vae_config.expression_vae.hidden),
      ),
      vae_variables,
    )
  else:
    config, variables, _ = load_training_run(directory, step, averaged=averaged)
  frozen = {}
  if variant_from_config(config.model).frozen_pose:
    source = hopenet or config.get("pretrained", {}).get("hopenet")
    if not source:
      raise CheckpointKindError(
        f"{directory}: this MMFA model uses the frozen Hopenet, which is not part of the run; "
        "pass the converted Hopenet directory (--hopenet DIR)"
      )
    frozen["hopenet"] = load_converted(source, "hopenet")[0]
  return LoadedModel(config.model, variables, vae, config.image_size, frozen)
