"""MMFA's motion heads (mmfa_delta.md 3-5): scale/translation, expression encoder and decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.models.blocks import ResBottleneck
from mmfa_jax.models.he_estimator import HETrunk
from mmfa_jax.ops.grid_sample import make_coordinate_grid
from mmfa_jax.ops.keypoints import heatmap_spread, soft_argmax
from mmfa_jax.ops.layers import BatchNorm, Conv, Dense, max_pool

Dtype = Any
TRANSLATION_HEADS = ("pooled", "heatmap")  # ScaleTranslationHead.translation
SCALE_HEADS = ("pooled", "heatmap")  # ScaleTranslationHead.scale


class ScaleTranslationHead(nn.Module):
  """Image -> ``{'scale': (B,), 'translation': (B, 3)}``.

  The HEEstimator trunk (``trunk``) with two Linear heads on its pooled features, both
  zero-initialised: ``fc_t`` (translation, normalised units (x, y, z), so it starts at 0) and
  ``fc_scale``, with ``scale = exp(fc_scale(features))`` (starts at 1, stays positive).

  ``translation``: ``'pooled'`` (mmfa_delta 3: ``fc_t`` alone) or ``'heatmap'``: x and y also get
  the soft-argmax of a one-channel map (``translation_map``, a zero-initialised 1x1 convolution)
  over the trunk's stage ``heatmap_stage`` feature map, in ``make_coordinate_grid`` units. Globally pooled
  features are nearly invariant to where the head is in the frame, so the pooled head hardly
  learns a translation; the map's expectation moves with the image content by construction.

  ``scale``: ``'pooled'`` (mmfa_delta 3) or ``'heatmap'``: the log-scale also gets
  ``log(spread / uniform_spread)``, where ``spread`` is the ``heatmap_spread`` of the softmax of a
  second zero-initialised 1x1 convolution (``scale_map``) over the same stage, and
  ``uniform_spread`` that of a uniform map (so the scale still starts at 1, up to rounding). A
  head that grows by k spreads a map that covers it by k, so such a scale can follow the head's
  size.
  """

  block_expansion: int = 64
  widths: Sequence[int] = (256, 512, 1024, 2048)
  blocks: Sequence[int] = (3, 3, 5, 2)
  translation: str = "pooled"
  scale: str = "pooled"
  heatmap_stage: int = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.translation not in TRANSLATION_HEADS:
      raise ValueError(
        f"scale_translation.translation must be one of {TRANSLATION_HEADS}, got {self.translation!r}"
      )
    if self.scale not in SCALE_HEADS:
      raise ValueError(f"scale_translation.scale must be one of {SCALE_HEADS}, got {self.scale!r}")
    trunk = HETrunk(self.block_expansion, self.widths, self.blocks, self.dtype, name="trunk")
    heatmap = "heatmap" in (self.translation, self.scale)
    features = trunk(image, train, self.heatmap_stage if heatmap else None)
    if heatmap:
      features, stage_map = features  # (B, widths[-1]), (B, h, w, widths[heatmap_stage])
    zeros = nn.initializers.zeros
    translation = Dense(3, dtype=self.dtype, kernel_init=zeros, bias_init=zeros, name="fc_t")(
      features
    ).astype(jnp.float32)  # (B, 3)

    def softmax_map(name: str) -> tuple[jax.Array, jax.Array]:
      logits = Dense(1, dtype=self.dtype, kernel_init=zeros, bias_init=zeros, name=name)(
        stage_map
      ).astype(jnp.float32)  # (B, h, w, 1): a 1x1 convolution
      grid = make_coordinate_grid(logits.shape[1:3])  # (h, w, 2)
      return soft_argmax(logits, grid), grid

    if self.translation == "heatmap":
      (centre, _), _ = softmax_map("translation_map")  # (B, 1, 2)
      translation = translation.at[:, :2].add(centre[:, 0])
    log_scale = Dense(1, dtype=self.dtype, kernel_init=zeros, bias_init=zeros, name="fc_scale")(
      features
    )[:, 0].astype(jnp.float32)  # (B,)
    if self.scale == "heatmap":
      (_, weights), grid = softmax_map("scale_map")  # (B, h, w, 1)
      if min(grid.shape[:2]) < 2:
        raise ValueError(
          f"scale='heatmap' needs a stage map of at least 2 x 2, got {grid.shape[:2]}"
        )
      # A uniform map's variance along an axis of n values 2 i / (n - 1) - 1: (n + 1) / (3 (n - 1)).
      uniform_spread = np.sqrt(np.mean([(n + 1) / (3 * (n - 1)) for n in grid.shape[:2]]))
      log_scale = log_scale + jnp.log(heatmap_spread(weights, grid)[:, 0] / uniform_spread)
    return {"scale": jnp.exp(log_scale), "translation": translation}


class ExpressionEncoder(nn.Module):
  """Image ``(B, H, W, 3)`` -> expression latent ``(B, latent_dim)`` (no activation).

  conv1 k7 s2 p3 -> norm1 -> ReLU -> MaxPool 3 s2 p1; conv2 1x1 -> ``widths[0]``, norm2, ReLU;
  ``block1_0`` (stride 2), ``block1_1``; conv3 1x1 -> ``widths[1]``, norm3, ReLU; ``block2_0``
  (stride 2), ``block2_1``; ``block3``, ``block4`` (stride 2 each); flatten in (C, H, W) order (as
  a PyTorch port would) and ``fc``. At 256 px and widths (256, 512) the map is 512 x 4 x 4.
  """

  stem_features: int = 64
  widths: Sequence[int] = (256, 512)
  latent_dim: int = 128
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> jax.Array:
    def conv_bn_relu(index: int, features: int, x: jax.Array, **kwargs: Any) -> jax.Array:
      x = Conv(features, dtype=self.dtype, name=f"conv{index}", **kwargs)(x)
      x = BatchNorm(dtype=self.dtype, name=f"norm{index}")(x, use_running_average=not train)
      return nn.relu(x)

    def bottleneck(name: str, stride: int, x: jax.Array) -> jax.Array:
      return ResBottleneck(stride=stride, dtype=self.dtype, name=name)(x, train)

    x = conv_bn_relu(1, self.stem_features, image, kernel_size=(7, 7), strides=2, padding=3)
    x = max_pool(x, (3, 3), (2, 2), 1)
    x = conv_bn_relu(2, self.widths[0], x, kernel_size=(1, 1))
    x = bottleneck("block1_1", 1, bottleneck("block1_0", 2, x))
    x = conv_bn_relu(3, self.widths[1], x, kernel_size=(1, 1))
    x = bottleneck("block2_1", 1, bottleneck("block2_0", 2, x))
    x = bottleneck("block4", 2, bottleneck("block3", 2, x))  # (B, h, w, C)
    flat = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # (B, C*h*w), torch order
    return Dense(self.latent_dim, dtype=self.dtype, name="fc")(flat).astype(jnp.float32)


class ExpressionDecoder(nn.Module):
  """(expression latent ``(B, d)``, canonical keypoints ``(B, K, 3)``) -> deformation ``(B, K, 3)``.

  Input ``concat(latent, flatten(canonical_kp))``; per hidden width i: ``fc{i}`` Linear,
  ``norm{i}`` BatchNorm1d, ReLU; then ``fc_out`` Linear to 3K, zero-initialised (the deformation
  starts at 0), no activation.
  """

  hidden: Sequence[int] = (256, 256, 256)
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, latent: jax.Array, canonical_kp: jax.Array, train: bool = False) -> jax.Array:
    batch, num_kp, _ = canonical_kp.shape
    x = jnp.concatenate([latent, canonical_kp.reshape(batch, -1)], axis=-1)  # (B, d + 3K)
    for i, width in enumerate(self.hidden):
      x = Dense(width, dtype=self.dtype, name=f"fc{i}")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name=f"norm{i}")(x, use_running_average=not train))
    out = Dense(
      3 * num_kp,
      dtype=self.dtype,
      kernel_init=nn.initializers.zeros,
      bias_init=nn.initializers.zeros,
      name="fc_out",
    )(x)
    return out.astype(jnp.float32).reshape(batch, num_kp, 3)
