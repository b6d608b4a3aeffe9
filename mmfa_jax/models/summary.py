"""Parameter counts and output shapes of every network at a config's real sizes (no compute).

Everything is traced with ``jax.eval_shape``, so the vox-256 networks are summarised in seconds
on a CPU. ``REFERENCE_PARAM_COUNTS`` holds the PyTorch reference's counts (architecture.md 4, 5,
7, 8, 10), which the mmfa_jax modules reproduce.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.animation import GENERATORS
from mmfa_jax.models.dense_motion import DenseMotionNetwork
from mmfa_jax.models.discriminator import MultiScaleDiscriminator
from mmfa_jax.models.expression_vae import ExpressionVAE
from mmfa_jax.models.he_estimator import HEEstimator
from mmfa_jax.models.hopenet import HOPENET_SIZE, Hopenet
from mmfa_jax.models.keypoint_detector import KPDetector
from mmfa_jax.models.motion import motion_sections
from mmfa_jax.models.motion_heads import ExpressionDecoder, ExpressionEncoder, ScaleTranslationHead
from mmfa_jax.models.perceptual import VGG19, VGGFace

# PyTorch `sum(p.numel() for p in module.parameters())` of the reference modules (architecture.md).
REFERENCE_PARAM_COUNTS = {
  "kp_detector": 41_940_047,
  "he_estimator": 30_254_838,
  "dense_motion": 43_545_549,
  "original_generator": 53_101_392,  # dense motion included
  "spade_generator": 100_988_176,  # dense motion included
  "discriminator": 2_758_849,
  # Hopenet's 23,919,890 include the unused fc_finetune (2051 x 3 + 3 = 6,156), not built here.
  "hopenet": 23_919_890 - 6_156,
}


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _summarise(module: nn.Module, *args: Any) -> dict[str, Any]:
  def init_and_apply(key: jax.Array, *args: Any) -> tuple[Any, Any]:
    variables = module.init(key, *args)
    return variables, module.apply(variables, *args)

  variables, outputs = jax.eval_shape(init_and_apply, jax.random.key(0), *args)
  return {
    "params": count_params(variables["params"]),
    "outputs": jax.tree.map(lambda s: tuple(s.shape), outputs),
  }


def summarise_networks(config: Any, batch: int = 1) -> dict[str, dict[str, Any]]:
  """``{network: {'params': int, 'outputs': shapes}}`` for every network of a config."""
  size = config.image_size
  image = jax.ShapeDtypeStruct((batch, size, size, config.image_channels), jnp.float32)
  model = config.model
  sections = motion_sections(model)  # each network's keyword arguments
  num_kp = model.num_kp
  keypoints = jax.ShapeDtypeStruct((batch, num_kp, 3), jnp.float32)
  depth = model.generator.reshape_depth
  volume_size = size // 2**model.generator.num_down_blocks
  volume = jax.ShapeDtypeStruct(
    (batch, depth, volume_size, volume_size, model.feature_channels), jnp.float32
  )
  latent = jax.ShapeDtypeStruct((batch, model.expression_encoder.latent_dim), jnp.float32)

  def generator_kwargs(kind: str) -> dict[str, Any]:
    kwargs = {k: v for k, v in dict(model.generator).items() if k != "kind"}
    kwargs["dense_motion"] = dict(model.dense_motion)
    if kind == "spade":
      kwargs["first_kernel_size"] = 3
    return kwargs

  hopenet_input = jax.ShapeDtypeStruct((batch, HOPENET_SIZE, HOPENET_SIZE, 3), jnp.float32)
  e = sections
  return {
    "kp_detector": _summarise(KPDetector(**e["kp_detector"]), image),
    "he_estimator": _summarise(HEEstimator(**e["he_estimator"]), image),
    "hopenet": _summarise(Hopenet(**e["hopenet"]), hopenet_input),
    "scale_translation": _summarise(ScaleTranslationHead(**e["scale_translation"]), image),
    "expression_encoder": _summarise(ExpressionEncoder(**e["expression_encoder"]), image),
    "expression_decoder": _summarise(
      ExpressionDecoder(**e["expression_decoder"]), latent, keypoints
    ),
    "dense_motion": _summarise(
      DenseMotionNetwork(**dict(model.dense_motion)), volume, keypoints, keypoints
    ),
    **{
      f"{kind}_generator": _summarise(
        generator_cls(**generator_kwargs(kind)), image, keypoints, keypoints
      )
      for kind, generator_cls in GENERATORS.items()
    },
    "discriminator": _summarise(
      MultiScaleDiscriminator(**dict(model.discriminator)),
      {float(scale): image for scale in model.discriminator.scales},
    ),
    "vgg19": _summarise(VGG19(), image),
    "vggface": _summarise(VGGFace(), image),
    "expression_vae": _summarise(
      ExpressionVAE(**dict(model.expression_vae)),
      jax.ShapeDtypeStruct((batch, model.expression_vae.feature_dim), jnp.float32),
      jax.random.key(0),
    ),
  }
