"""Random model variables without running ``init`` (which compiles or dispatches every layer and is
slow on a 2-core CPU): shapes from ``jax.eval_shape``, values drawn with numpy."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def random_variables(module: Any, *args: Any, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
  """PyTorch-default-like random params, non-trivial BatchNorm statistics, and spectral-norm
  vectors set to the kernel's leading singular vectors (what power iteration converges to).
  ``args`` are traced, ``kwargs`` passed to ``init`` as they are."""
  template = jax.eval_shape(
    lambda key, *a: module.init(key, *a, **kwargs), jax.random.key(0), *args
  )
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
    lambda path, leaf: _param(rng, path, leaf), template["params"]
  )
  variables = {"params": params}
  if "batch_stats" in template:
    variables["batch_stats"] = _stats(rng, template["batch_stats"], params)
  return variables


def _name(path: Any) -> str:
  return str(path[-1].key)


def _param(rng: np.random.Generator, path: Any, leaf: Any) -> np.ndarray:
  shape, name = leaf.shape, _name(path)
  if name == "kernel":
    bound = 1 / math.sqrt(max(1, math.prod(shape[:-1])))
    return rng.uniform(-bound, bound, shape).astype(np.float32)
  if name == "scale":
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  return rng.normal(0, 0.1, shape).astype(np.float32)


def _stats(rng: np.random.Generator, stats: dict, params: dict) -> dict:
  out = {}
  for name, value in stats.items():
    if isinstance(value, dict):
      out[name] = _stats(rng, value, params.get(name, {}) if isinstance(params, dict) else {})
    elif name == "mean":
      out[name] = rng.normal(0, 0.1, value.shape).astype(np.float32)
    elif name == "var":
      out[name] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    elif name in ("u", "v"):
      kernel = np.asarray(params["kernel"])
      matrix = (
        np.moveaxis(kernel, (-1, -2), (0, 1)).reshape(kernel.shape[-1], -1)
        if kernel.ndim > 2
        else kernel.T
      )
      left, _, right = np.linalg.svd(matrix, full_matrices=False)
      out[name] = (left[:, 0] if name == "u" else right[0]).astype(np.float32)
  return out


def random_vae(config: Any, seed: int = 1) -> tuple[Any, dict[str, Any]]:
  """An ``ExpressionVAE`` of ``config.model.expression_vae`` with random parameters and feature
  statistics of 16 random feature vectors."""
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.models.expression_vae import ExpressionVAE

  vae = ExpressionVAE(**dict(config.model.expression_vae))
  features = np.random.default_rng(seed).normal(size=(16, vae.feature_dim)).astype(np.float32)
  variables = init_variables(vae, seed, features, jax.random.key(0))
  _, updated = vae.apply(
    variables, features, method=ExpressionVAE.update_feature_stats, mutable=["batch_stats"]
  )
  return vae, {"params": variables["params"], "batch_stats": updated["batch_stats"]}


def save_training_run(
  workdir: Any, config: Any, variables: Any, step: int = 3, average: Any = None
) -> None:
  """A training workdir (config.json + one checkpoint of ``variables``) as training writes it;
  ``average``: the parameter average (``ema_params``) of a run with ``optim.ema_decay`` > 0."""
  from mmfa_jax.checkpoints import TrainingCheckpoints
  from mmfa_jax.train_loop import save_config

  workdir.mkdir(parents=True)
  save_config(config, str(workdir))
  checkpoints = TrainingCheckpoints(workdir / "checkpoints", 2, async_save=False)
  try:
    state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if average is not None:
      state["ema_params"] = average
    checkpoints.save(step, state, {"params": {"w": np.zeros(2, np.float32)}})
  finally:
    checkpoints.close()


def save_random_face_vid2vid(directory: Any, size: int = 64, seed: int = 0) -> str:
  """A converted face_vid2vid directory of a random tiny model (``synthetic.py:tiny:face_vid2vid``),
  as ``tools/convert_torch_weights.py`` writes it."""
  from configs import synthetic
  from mmfa_jax.checkpoints import save_converted
  from mmfa_jax.models import animation_model_from_config

  config = synthetic.get_config("tiny:face_vid2vid")
  image = np.zeros((1, size, size, 3), np.float32)
  variables = random_variables(animation_model_from_config(config.model), image, image, seed=seed)
  save_converted(
    directory,
    {"model": variables},
    {"kind": "face_vid2vid", "model_config": config.model.to_json(), "image_size": size},
  )
  return str(directory)
