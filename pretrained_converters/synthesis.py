"""State_dicts of the synthesis side -> mmfa_jax variables: generators (original, SPADE,
multi-scale), discriminator, VGG19, VGG-Face and the expression VAE.

Spectral-normalised layers are read from ``weight_orig``, ``weight_u``, ``weight_v``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pretrained_converters.common import (
  DEFAULT_LIST_NAMES,
  convert_state_dict,
  default_torch_prefix,
)

_GENERATOR_LISTS = (*DEFAULT_LIST_NAMES, "mlp_shared")
_BATCH_COUNTER = r"(^|\.)num_batches_tracked$"


def _generator_prefix(module_path: tuple[str, ...]) -> str:
  return default_torch_prefix(module_path, _GENERATOR_LISTS)


def convert_generator(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "generator",
  report: dict | None = None,
) -> dict:
  """Original, SPADE or multi-scale generator (``dense_motion_network`` included)."""
  return convert_state_dict(
    state_dict, template, torch_prefix=_generator_prefix, source=source, report=report
  )


def _discriminator_prefix(module_path: tuple[str, ...]) -> str:
  parts = [
    f"discs.{name[len('discs_') :]}" if name.startswith("discs_") else name for name in module_path
  ]
  return default_torch_prefix(tuple(".".join(parts).split(".")))


def convert_discriminator(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "discriminator",
  report: dict | None = None,
) -> dict:
  """``MultiScaleDiscriminator`` (keys ``discs.{scale}.down_blocks.{i}.conv.weight_orig`` ...)."""
  return convert_state_dict(
    state_dict, template, torch_prefix=_discriminator_prefix, source=source, report=report
  )


def convert_vgg19(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "vgg19",
  report: dict | None = None,
) -> dict:
  """torchvision VGG19 (``features.{i}``); layers past relu5_1, the classifier and stored
  normalisation buffers are not needed."""
  return convert_state_dict(
    state_dict,
    template,
    torch_prefix=lambda path: ".".join(path).replace("features_", "features."),
    ignore=(r"^features\.(3[0-9])\.", r"^classifier\.", r"^(mean|std)$"),
    source=source,
    report=report,
  )


def convert_vggface(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str = "vggface",
  report: dict | None = None,
) -> dict:
  """``vgg_face_dag`` (``conv{b}_{j}``, ``fc6..8``); conv5_2, conv5_3 and the fc layers are unused."""
  return convert_state_dict(
    state_dict, template, ignore=(r"^conv5_[23]\.", r"^fc[678]\."), source=source, report=report
  )


def convert_by_name(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  source: str,
  report: dict | None = None,
) -> dict:
  """Expression VAE and latent discriminator: names map one to one."""
  return convert_state_dict(
    state_dict, template, ignore=(_BATCH_COUNTER,), source=source, report=report
  )
