"""Converted pretrained weights on disk: one orbax checkpoint plus a small JSON metadata file.

Layout of a converted directory::

    DIR/metadata.json   {"kind": ..., "source_file": ..., "source_sha256": ..., "mmfa_jax_version": ...,
                         "config": ..., "created": ...}
    DIR/arrays/         orbax checkpoint of the variables pytree

``load_converted(DIR, kind)`` is the one loader for every kind (training, inference, tests). A
directory is written under a temporary name and renamed into place at the end, so an interrupted
conversion never leaves a half-written DIR, and an existing DIR is only replaced when asked to.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

import mmfa_jax

METADATA_FILE = "metadata.json"
ARRAYS_DIR = "arrays"
# Kinds of converted directories: those converted from PyTorch files (the converter registry,
# pretrained_converters.convert.CONVERTERS) and those trained here (the synthetic heads' landmark
# detector, mmfa_jax/landmark_train.py).
CONVERTED_KINDS = ("hopenet", "vgg19", "vggface", "face_vid2vid", "lpips", "inception")
TRAINED_KINDS = ("landmarks",)
KINDS = CONVERTED_KINDS + TRAINED_KINDS
MODEL_KIND = "face_vid2vid"  # the converted kind that holds a whole animation model


class ConvertedWeightsError(ValueError):
  """A converted-weights directory that is missing, incomplete or of the wrong kind."""


def file_sha256(path: str | os.PathLike) -> str:
  """Hex SHA-256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as handle:
    for chunk in iter(lambda: handle.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def save_converted(
  directory: str | os.PathLike,
  variables: Any,
  metadata: dict[str, Any],
  *,
  overwrite: bool = False,
) -> str:
  """Writes ``variables`` (a pytree of arrays) and ``metadata`` to ``directory`` atomically.

  Raises:
    ConvertedWeightsError: ``directory`` exists and ``overwrite`` is False, or ``metadata`` has no
      valid ``kind``.
  """
  import orbax.checkpoint as ocp

  directory = os.path.abspath(os.fspath(directory))
  if metadata.get("kind") not in KINDS:
    raise ConvertedWeightsError(
      f"metadata kind must be one of {KINDS}, got {metadata.get('kind')!r}"
    )
  if os.path.exists(directory) and not overwrite:
    raise ConvertedWeightsError(f"{directory}: already exists (pass --overwrite to replace it)")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.", dir=parent)
  try:
    checkpointer = ocp.StandardCheckpointer()
    arrays = jax_tree_to_numpy(variables)
    checkpointer.save(os.path.join(staging, ARRAYS_DIR), arrays)
    checkpointer.wait_until_finished()
    full_metadata = dict(
      metadata,
      mmfa_jax_version=mmfa_jax.__version__,
      created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    with open(os.path.join(staging, METADATA_FILE), "w") as handle:
      json.dump(full_metadata, handle, indent=2, sort_keys=True)
    if os.path.exists(directory):
      retired = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old.", dir=parent)
      os.replace(directory, os.path.join(retired, "previous"))
      os.replace(staging, directory)
      shutil.rmtree(retired, ignore_errors=True)
    else:
      os.replace(staging, directory)
  finally:
    if os.path.exists(staging):
      shutil.rmtree(staging, ignore_errors=True)
  return directory


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
  """The metadata of a converted directory, with clear errors when it is not one."""
  directory = os.fspath(directory)
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isdir(directory):
    raise ConvertedWeightsError(
      f"{directory}: no such directory (convert the weights first with "
      "tools/convert_torch_weights.py)"
    )
  if not os.path.isfile(path):
    try:  # e.g. a training run's WORKDIR/pose_network given for its hopenet/
      names = os.listdir(directory)
    except OSError:  # unreadable: the message below without the hint
      names = []
    inside = sorted(n for n in names if os.path.isfile(os.path.join(directory, n, METADATA_FILE)))
    hint = f"; it holds {', '.join(n + '/' for n in inside)}: pass that path" if inside else ""
    raise ConvertedWeightsError(
      f"{directory}: not a converted-weights directory (no {METADATA_FILE}){hint}"
    )
  try:
    with open(path) as handle:
      return json.load(handle)
  except (OSError, json.JSONDecodeError) as error:
    raise ConvertedWeightsError(f"{path}: unreadable metadata ({error})") from error


def load_converted(
  directory: str | os.PathLike, kind: str | None = None
) -> tuple[Any, dict[str, Any]]:
  """Loads ``(variables, metadata)`` from a converted directory.

  Args:
    directory: written by ``save_converted`` (``tools/convert_torch_weights.py``).
    kind: if given, the directory must hold this kind (one of ``KINDS``).

  Raises:
    ConvertedWeightsError: missing directory, not a converted directory, wrong kind, or arrays
      that cannot be read.
  """
  import orbax.checkpoint as ocp

  metadata = read_metadata(directory)
  if kind is not None and metadata.get("kind") != kind:
    raise ConvertedWeightsError(
      f"{directory}: holds {metadata.get('kind')!r} weights, but {kind!r} weights are needed here"
    )
  arrays_path = os.path.abspath(os.path.join(os.fspath(directory), ARRAYS_DIR))
  if not os.path.isdir(arrays_path):
    raise ConvertedWeightsError(f"{directory}: the arrays ({ARRAYS_DIR}/) are missing")
  try:
    variables = ocp.StandardCheckpointer().restore(arrays_path)
  except Exception as error:  # orbax raises several types for damaged checkpoints
    raise ConvertedWeightsError(f"{arrays_path}: cannot be restored ({error})") from error
  require_finite(variables, os.fspath(directory))
  return variables, metadata


def require_finite(tree: Any, where: str) -> None:
  """ConvertedWeightsError naming the tensors of ``tree`` (by path) that hold NaN or infinity."""
  import jax

  bad = [
    jax.tree_util.keystr(path, simple=True, separator="/")
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all()
  ]
  if bad:
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise ConvertedWeightsError(f"{where}: non-finite weights (NaN or infinity) in {shown}")


def jax_tree_to_numpy(tree: Any) -> Any:
  """Nested dicts of arrays -> the same with float32/int numpy leaves (orbax-friendly)."""
  if isinstance(tree, dict):
    return {str(k): jax_tree_to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


CONVERT_HINT = {
  "hopenet": "hopenet_robust_alpha1.pkl",
  "vgg19": "vgg19-dcbb9e9d.pth",
  "vggface": "vgg_face_dag.pth",
}
# Where a frozen network that is trained, not converted, comes from.
TRAIN_HINT = {"landmarks": "train one with configs/synthetic_landmarks.py (synthetic heads)"}


def _unset_hint(kind: str) -> str:
  if kind in TRAIN_HINT:
    return f"config.pretrained.{kind} is not set: {TRAIN_HINT[kind]}, then pass its DIR/{kind}"
  return (
    f"config.pretrained.{kind} is not set: convert {CONVERT_HINT[kind]} with "
    f"`python tools/convert_torch_weights.py {kind} --input FILE --output DIR` and pass "
    f"--config.pretrained.{kind}=DIR"
  )


def load_pretrained(
  pretrained: Any, kinds: tuple[str, ...] = ("hopenet", "vgg19", "vggface")
) -> dict[str, Any]:
  """Loads the frozen networks named in a config's ``pretrained`` section, ``{kind: variables}``.

  Every directory is checked (set, exists, right kind) before anything is loaded, and all problems
  are reported together, so a run fails at start-up, before any compilation.
  """
  problems = []
  for kind in kinds:
    directory = pretrained.get(kind) if hasattr(pretrained, "get") else None
    if not directory:
      problems.append(_unset_hint(kind))
      continue
    try:
      read_kind = read_metadata(directory).get("kind")
    except ConvertedWeightsError as error:
      problems.append(f"config.pretrained.{kind}: {error}")
      continue
    if read_kind != kind:
      problems.append(
        f"config.pretrained.{kind}: {directory} holds {read_kind!r} weights, not {kind!r}"
      )
  if problems:
    raise ConvertedWeightsError("\n".join(problems))
  return {kind: load_converted(pretrained.get(kind), kind)[0] for kind in kinds}


def innermost_message(error: BaseException) -> str:
  """The first line of the innermost cause of ``error`` (orbax and tensorstore wrap the error
  that names the file and the problem in several layers)."""
  root = error
  while root.__cause__ or root.__context__:
    root = root.__cause__ or root.__context__
  return (str(root).strip() or type(root).__name__).splitlines()[0]


class CheckpointWriteError(RuntimeError):
  """A training checkpoint could not be written (a full disk, a lost mount...). The checkpoints
  written before it are complete and untouched; the message names the directory and the last one."""


class TrainingCheckpoints:
  """Orbax checkpoints of a training run: both train states, the data iterator and the step.

  Saves are asynchronous (the device-to-host copy blocks, the writing does not); orbax writes each
  step under a temporary name and renames it when complete, so ``latest_step`` only ever sees whole
  checkpoints and an interrupted save leaves the previous ones usable. Keeps the last ``keep``.
  """

  def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
    import orbax.checkpoint as ocp

    self.directory = os.path.abspath(os.fspath(directory))
    self._ocp = ocp
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _args(self, save: bool, generator: Any, discriminator: Any, data_iterator: Any) -> Any:
    """``Composite`` save or restore arguments for the items that are given (not ``None``)."""
    import grain

    ocp = self._ocp
    state_arg = ocp.args.StandardSave if save else ocp.args.StandardRestore
    data_arg = grain.checkpoint.CheckpointSave if save else grain.checkpoint.CheckpointRestore
    items = {}
    for name, state in (("generator", generator), ("discriminator", discriminator)):
      if state is not None:
        items[name] = state_arg(state)
    if data_iterator is not None:
      items["data"] = data_arg(data_iterator)
    return ocp.args.Composite(**items)

  def save(self, step: int, generator: Any, discriminator: Any, data_iterator: Any = None) -> bool:
    """Starts saving ``step`` (returns at once when asynchronous); False if it already exists."""
    if step in self.manager.all_steps():
      return False
    args = self._args(True, generator, discriminator, data_iterator)
    return self._writing(lambda: self.manager.save(step, args=args, force=True))

  def _writing(self, action: Any) -> Any:
    """``action()``, a failed write (this save's, or an earlier asynchronous one's that this
    call waited for) reported as ``CheckpointWriteError``."""
    try:
      return action()
    except Exception as error:
      complete = self.manager.all_steps(read=True)
      last = f"step {max(complete)}" if complete else "none yet"
      raise CheckpointWriteError(
        f"{self.directory}: writing a checkpoint failed ({innermost_message(error)}); the last "
        f"complete checkpoint ({last}) is intact and a resumed run starts from it"
      ) from error

  def restore(
    self, step: int, generator: Any, discriminator: Any, data_iterator: Any = None
  ) -> tuple[Any, Any]:
    """Restores the states onto the abstract targets (shapes, dtypes, shardings) and, if given,
    sets ``data_iterator`` to where it was. A target given as ``None`` is not read (``None`` back)."""
    args = self._args(False, generator, discriminator, data_iterator)
    restored = self.manager.restore(step, args=args)
    return restored.get("generator"), restored.get("discriminator")

  def restore_arrays(self, step: int, item: str = "generator") -> Any:
    """One state as saved (nested dicts of arrays) on this process's first device, whatever the
    topology it was saved from (a pod run restores on one GPU): what inference reads."""
    import jax

    checkpointer = self._ocp.StandardCheckpointer()
    path = os.path.join(self.directory, str(step), item)
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return checkpointer.restore(path, target)

  def wait(self) -> None:
    self._writing(self.manager.wait_until_finished)

  def close(self) -> None:
    try:
      self._writing(self.manager.wait_until_finished)
    finally:
      self.manager.close()


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the configs use (recursively)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def read_run_config(workdir: str | os.PathLike) -> Any:
  """The ``ml_collections.ConfigDict`` a training run saved in ``WORKDIR/config.json``."""
  import ml_collections

  path = os.path.join(os.fspath(workdir), "config.json")
  try:
    with open(path) as handle:
      raw = json.load(handle)
  except FileNotFoundError:
    raise ConvertedWeightsError(
      f"{workdir} is not an mmfa_jax training run: {path} is missing"
    ) from None
  except (OSError, json.JSONDecodeError) as error:
    raise ConvertedWeightsError(f"{path}: cannot read the run's config ({error})") from None
  return ml_collections.ConfigDict(_tuples(raw))


def load_training_run(
  workdir: str | os.PathLike, step: int | None = None, *, averaged: bool = True
) -> tuple[Any, dict[str, Any], int]:
  """``(config, {"params", "batch_stats"}, step)`` of a training run's generator side.

  Reads ``WORKDIR/config.json`` and the checkpoint of ``step`` (default: the latest complete one)
  from ``WORKDIR/checkpoints``; the variables are the trained ones (for MMFA with a frozen Hopenet,
  its variables are not in the run and come from ``config.pretrained.hopenet``). ``params`` is
  the run's parameter average when it kept one (``optim.ema_decay`` > 0) and ``averaged`` is
  True, else its last parameters.
  """
  config = read_run_config(workdir)
  directory = os.path.join(os.fspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise ConvertedWeightsError(f"{workdir}: no checkpoints/ directory (has the run saved yet?)")
  checkpoints = TrainingCheckpoints(directory, keep=1_000_000, async_save=False)
  try:
    steps = checkpoints.manager.all_steps()
    if not steps:
      raise ConvertedWeightsError(f"{directory} holds no complete checkpoint")
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise ConvertedWeightsError(f"{directory} has no step {step} (it has {sorted(steps)})")
    try:
      arrays = checkpoints.restore_arrays(step, "generator")
    except Exception as error:  # orbax / tensorstore raise several types for damaged files
      detail = innermost_message(error)
      raise ConvertedWeightsError(
        f"{os.path.join(directory, str(step))}: cannot be restored ({detail}); an earlier step "
        f"may load with --step (steps: {sorted(steps)})"
      ) from error
  finally:
    checkpoints.close()
  params = arrays.get("ema_params") if averaged else None
  if params is None:
    params = arrays["params"]
  variables = {"params": params, "batch_stats": arrays.get("batch_stats") or {}}
  return config, variables, step
