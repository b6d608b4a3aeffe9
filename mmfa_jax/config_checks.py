"""Checks of a training config's values before anything is built: one clear message per problem
(``python -m mmfa_jax.main`` reports it as one ``error:`` line and exit status 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections

# Config counts that must be at least 1 (sample_every 0: no sample grids; num_steps 0: nothing).
_POSITIVE = ("data.batch_size", "image_size", "train.log_every", "train.checkpoint_every")
_NON_NEGATIVE = ("train.num_steps", "train.sample_every", "optim.learning_rate")
_CHOICES = {"train.tiered_compilation": ("auto", "on", "off")}


def _value(config: ml_collections.ConfigDict, name: str) -> Any:
  section, _, field = name.rpartition(".")
  holder = config.get(section) if section else config
  return holder.get(field) if holder is not None else None


def check_counts(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the first count of ``config`` outside its range, or a field that is none of
  its choices (before anything is built)."""
  for names, least in ((_POSITIVE, 1), (_NON_NEGATIVE, 0)):
    for name in names:
      value = _value(config, name)
      if value is not None and value < least:
        raise ValueError(f"config.{name}={value} must be at least {least}")
  ema_decay = _value(config, "optim.ema_decay")
  if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"config.optim.ema_decay={ema_decay} must be in [0, 1) (0: no average)")
  # Imported here, not with this module: the flag parser imports it, and the models bring in flax.
  from mmfa_jax.models.motion_heads import SCALE_HEADS, TRANSLATION_HEADS

  choices_of = {
    **_CHOICES,
    "model.scale_translation.translation": TRANSLATION_HEADS,
    "model.scale_translation.scale": SCALE_HEADS,
  }
  for name, choices in choices_of.items():
    value = _value(config, name)
    if value is not None and value not in choices:
      raise ValueError(f"config.{name}={value!r} must be one of {', '.join(choices)}")


def flag_error_message(argv: list[str], error: Exception) -> str:
  """One line for a command line that absl / ml_collections could not parse: the flag with the
  problem (an unknown config field, a value of the wrong type, a missing config file)."""
  if isinstance(error, (AttributeError, KeyError)):  # ml_collections: an unknown field
    field = str(error).strip("\"'")
    culprit = next((a for a in argv[1:] if a.startswith("--config.") and field in a), "--config")
    return f"{culprit}: the config has no field {field!r}"
  if isinstance(error, SyntaxError):  # in the config file
    return f"--config: {error.filename}, line {error.lineno}: {error.msg}"
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if len(lines) > 1 and "Traceback" in str(error):  # the config file's get_config raised
    return f"{lines[0].rstrip(':')}: {lines[-1]}"
  if isinstance(error, OSError) and len(lines) > 1:  # ml_collections: the config file's problem
    return f"--config: {lines[-1]}"
  return lines[0]


def config_flags_parser(config_flag: Any) -> Callable[[list[str]], list[str]]:
  """An ``absl.app.run`` ``flags_parser`` for a command with a ``config_flags`` config file:
  problems (unknown config fields, wrong types, a missing or broken config file, a missing flag)
  end the command with one ``error:`` line and exit status 2 instead of a traceback."""
  import sys

  from absl import flags

  def parse(argv: list[str]) -> list[str]:
    try:
      parsed = flags.FLAGS(argv)
      if config_flag.value is not None:
        config_flag.value.keys()  # a config file that failed to load raises only when first used
      return parsed
    except (
      flags.Error,
      AttributeError,
      KeyError,
      TypeError,
      ValueError,
      OSError,
      SyntaxError,
    ) as error:
      print(f"error: {flag_error_message(argv, error)}", file=sys.stderr)
      sys.exit(2)

  return parse
