"""Layout rules for turning PyTorch state_dict tensors into Flax variables (architecture.md 1.6).

* Conv{1,2,3}d ``[out, in, *k]`` -> Flax ``[*k, in, out]``.
* Linear ``[out, in]`` -> Dense kernel ``[in, out]``.
* BatchNorm / InstanceNorm ``weight, bias`` -> ``params/{scale, bias}``; ``running_mean,
  running_var`` -> ``batch_stats/{mean, var}``; ``num_batches_tracked`` is dropped.
* Spectral norm: ``weight_orig`` -> ``kernel`` (transposed like any weight), ``weight_u``,
  ``weight_v`` -> ``batch_stats/{u, v}``, so eval-mode outputs equal PyTorch's exactly.
* Names: a network family's Flax module path -> PyTorch prefix and the file keys it may leave
  unused are data, a ``NameMap`` (the per-network modules hold theirs); ``convert_state_dict``
  is the one function that applies them.

Files are read with ``torch.load(..., weights_only=True)``: nothing is unpickled beyond tensors and
plain containers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


class CheckpointError(ValueError):
  """A weights file that cannot be read or does not hold what a converter needs."""


def read_weights_file(path: str | os.PathLike) -> Mapping[str, Any]:
  """Reads a weights file without executing code from it.

  ``.safetensors`` (safetensors' numpy reader) and ``.npz`` (``allow_pickle=False``) give flat
  ``{name: ndarray}``; anything else (``.pth``, ``.pth.tar``, ``.pkl``, ``.pt``) goes through
  ``torch.load(..., weights_only=True)``, which may give nested dicts (training checkpoints).

  Raises:
    CheckpointError: naming the file and the problem (missing, unreadable, truncated, refused by
      the safe loader because it needs code execution, not a mapping).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise CheckpointError(f"{path}: a folder, not a weights file")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import load_file

      loaded = load_file(path)
    elif path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as archive:
        loaded = {name: archive[name] for name in archive.files}
    else:
      import torch  # optional dependency: the `convert` extra

      loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # each reader raises its own types for bad files
    raise CheckpointError(
      f"{path}: cannot be read as a weights file ({type(error).__name__}: {error})"
    ) from error
  if not isinstance(loaded, Mapping):
    raise CheckpointError(f"{path}: expected a state_dict (a mapping), got {type(loaded).__name__}")
  return loaded


def state_dict_entry(
  loaded: Mapping[str, Any], path: str | os.PathLike, key: str | None = None
) -> dict[str, np.ndarray]:
  """``{name: float32 ndarray}`` from what ``read_weights_file`` gave.

  With ``key`` (e.g. ``'kp_detector'`` of a training checkpoint): the nested entry, or, in a flat
  file, the names under ``'{key}.'``. A leading ``module.`` (DataParallel) is stripped.
  """
  path = os.fspath(path)
  if key is not None:
    if key in loaded and isinstance(loaded[key], Mapping):
      loaded = loaded[key]
    else:
      flat = {
        name[len(key) + 1 :]: value for name, value in loaded.items() if name.startswith(f"{key}.")
      }
      if not flat:
        raise CheckpointError(f"{path}: has no entry {key!r} (found {sorted(loaded)[:12]})")
      loaded = flat
  state_dict = {}
  for name, value in loaded.items():
    if hasattr(value, "detach"):  # a torch tensor
      value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
      raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    clean = name[len("module.") :] if name.startswith("module.") else name
    state_dict[clean] = value
  return state_dict


def load_torch_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
  """``state_dict_entry(read_weights_file(path), path, key)``: one file, one state_dict."""
  return state_dict_entry(read_weights_file(path), path, key)


def conv_kernel(weight: Any) -> np.ndarray:
  """``[out, in, *k]`` PyTorch conv weight -> ``[*k, in, out]`` Flax kernel."""
  weight = np.asarray(weight)
  if weight.ndim < 3:
    raise CheckpointError(f"conv weight must have rank >= 3, got shape {weight.shape}")
  return np.transpose(weight, (*range(2, weight.ndim), 1, 0))


def dense_kernel(weight: Any) -> np.ndarray:
  """``[out, in]`` PyTorch Linear weight -> ``[in, out]`` Flax kernel."""
  weight = np.asarray(weight)
  if weight.ndim != 2:
    raise CheckpointError(f"linear weight must have rank 2, got shape {weight.shape}")
  return weight.T


def take_conv(state_dict: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  """``{prefix}.weight`` (and ``.bias`` if present) -> Flax ``{'kernel', 'bias'}``."""
  params = {"kernel": conv_kernel(_require(state_dict, f"{prefix}.weight"))}
  if f"{prefix}.bias" in state_dict:
    params["bias"] = np.asarray(state_dict[f"{prefix}.bias"])
  return params


def take_dense(state_dict: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  """``{prefix}.weight`` (and ``.bias``) of a Linear -> Flax ``{'kernel', 'bias'}``."""
  params = {"kernel": dense_kernel(_require(state_dict, f"{prefix}.weight"))}
  if f"{prefix}.bias" in state_dict:
    params["bias"] = np.asarray(state_dict[f"{prefix}.bias"])
  return params


def take_batchnorm(
  state_dict: Mapping[str, Any], prefix: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """BatchNorm under ``prefix`` -> (``{'scale', 'bias'}`` params, ``{'mean', 'var'}`` batch_stats)."""
  params = {
    "scale": np.asarray(_require(state_dict, f"{prefix}.weight")),
    "bias": np.asarray(_require(state_dict, f"{prefix}.bias")),
  }
  stats = {
    "mean": np.asarray(_require(state_dict, f"{prefix}.running_mean")),
    "var": np.asarray(_require(state_dict, f"{prefix}.running_var")),
  }
  return params, stats


def _require(state_dict: Mapping[str, Any], name: str) -> Any:
  if name not in state_dict:
    raise CheckpointError(f"state_dict has no {name!r}")
  return state_dict[name]


_LEAF_TO_TORCH = {
  ("params", "kernel"): "weight",
  ("params", "bias"): "bias",
  ("params", "scale"): "weight",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
  ("batch_stats", "u"): "weight_u",  # spectral norm
  ("batch_stats", "v"): "weight_v",
}

BATCH_COUNTER = r"(^|\.)num_batches_tracked$"  # BatchNorm's step counter: never needed
BLOCK_LISTS = (
  (r"(down_blocks|up_blocks)_(\d+)", r"\1.\2"),
)  # ModuleList ``{list}_{i}`` -> ``{list}.{i}``


@dataclasses.dataclass(frozen=True)
class NameMap:
  """One network family's naming, as data: Flax module path -> PyTorch module prefix, and the file
  keys that may stay unused.

  Attributes:
    renames: ``(pattern, replacement)`` pairs. Each Flax module name of a path takes the replacement
      of the first pattern that matches it whole (``re.fullmatch`` then ``expand``: ``\\1`` works);
      an empty replacement drops the name, a name no pattern matches stays. The results are joined
      with '.'.
    ignore: regexes of file keys allowed to stay unused (``re.search``).
  """

  renames: tuple[tuple[str, str], ...] = BLOCK_LISTS
  ignore: tuple[str, ...] = (BATCH_COUNTER,)

  def torch_prefix(self, module_path: tuple[str, ...]) -> str:
    parts = []
    for name in module_path:
      for pattern, replacement in self.renames:
        match = re.fullmatch(pattern, name)
        if match:
          name = match.expand(replacement)
          break
      if name:
        parts.append(name)
    return ".".join(parts)

  def converter(self, default_source: str) -> Callable[..., dict[str, Any]]:
    """``convert(state_dict, template, source=default_source, report=None)``: ``convert_state_dict``
    with this naming (a network module's public converter)."""

    def convert(
      state_dict: Mapping[str, Any],
      template: Mapping[str, Any],
      source: str = default_source,
      report: dict | None = None,
    ) -> dict[str, Any]:
      return convert_state_dict(
        state_dict,
        template,
        torch_prefix=self.torch_prefix,
        ignore=self.ignore,
        source=source,
        report=report,
      )

    convert.__doc__ = (
      f"Fills ``template`` (``{{'params', 'batch_stats'}}``) from a {default_source} state_dict."
    )
    return convert


DEFAULT_NAMES = NameMap()  # names map one to one (ModuleLists aside)


def convert_state_dict(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  *,
  torch_prefix: Callable[[tuple[str, ...]], str] = DEFAULT_NAMES.torch_prefix,
  ignore: Sequence[str] = (BATCH_COUNTER,),
  source: str = "state_dict",
  report: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Fills a Flax variables template (``{'params': ..., 'batch_stats': ...}``) from a state_dict.

  Each Flax leaf ``(collection, *module_path, leaf)`` is looked up as
  ``torch_prefix(module_path) + '.' + {weight|bias|running_mean|running_var}`` (by default
  ``DEFAULT_NAMES``: names joined by '.', ``down_blocks_{i}`` -> ``down_blocks.{i}``); conv and linear
  weights are transposed to Flax layout. Template leaves only need ``.shape`` (arrays or
  ``jax.ShapeDtypeStruct`` from ``jax.eval_shape``).

  If ``report`` is a dict, it receives ``tensors`` (number mapped), ``parameters`` (their size)
  and ``ignored`` (file keys left unused by an ``ignore`` rule).

  Raises:
    CheckpointError: one message naming every missing key, every shape mismatch and every
      unexpected key (keys matching an ``ignore`` regex are allowed to stay unused).
  """
  used: set[str] = set()
  missing, mismatched = [], []
  converted: dict[str, Any] = {}
  for collection, tree in template.items():
    for path, leaf in _flatten(tree):
      suffix = _LEAF_TO_TORCH.get((collection, path[-1]))
      if suffix is None:
        raise CheckpointError(f"no PyTorch name rule for {collection}/{'/'.join(path)}")
      key = f"{torch_prefix(path[:-1])}.{suffix}"
      if suffix == "weight" and key not in state_dict and f"{key}_orig" in state_dict:
        key = f"{key}_orig"  # a spectral-normalised layer keeps the raw weight as weight_orig
      if key not in state_dict:
        missing.append(key)
        continue
      used.add(key)
      value = np.asarray(state_dict[key])
      expected = tuple(leaf.shape)
      if path[-1] == "kernel":  # compare in PyTorch layout, as the user knows the file
        expected = _torch_kernel_shape(expected)
      if tuple(value.shape) != expected:
        mismatched.append(f"{key}: file {tuple(value.shape)}, model needs {expected}")
        continue
      if path[-1] == "kernel":
        value = dense_kernel(value) if value.ndim == 2 else conv_kernel(value)
      _insert(converted.setdefault(collection, {}), path, value.astype(np.float32))
  unexpected = [k for k in state_dict if k not in used and not any(re.search(p, k) for p in ignore)]
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
  if mismatched:
    problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
  if unexpected:
    problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(sorted(unexpected))}")
  if problems:
    raise CheckpointError(f"{source}: " + " | ".join(problems))
  if report is not None:
    report["tensors"] = len(used)
    report["parameters"] = sum(int(np.asarray(state_dict[k]).size) for k in used)
    report["ignored"] = sorted(k for k in state_dict if k not in used)
  return converted


def _torch_kernel_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """Flax ``[in, out]`` / ``[*k, in, out]`` -> PyTorch ``[out, in]`` / ``[out, in, *k]``."""
  if len(flax_shape) == 2:
    return flax_shape[::-1]
  return (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])


def _flatten(
  tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
  items = []
  for name, value in tree.items():
    if isinstance(value, Mapping):
      items.extend(_flatten(value, (*prefix, name)))
    else:
      items.append(((*prefix, name), value))
  return items


def _insert(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value
