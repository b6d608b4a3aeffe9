"""Layer helpers shared by every network, with PyTorch's exact semantics (channels-last).

* ``Conv``: N-d convolution (2D ``(B, H, W, C)`` or 3D ``(B, D, H, W, C)``) with PyTorch's
  symmetric explicit zero padding (never XLA 'SAME', which pads strided convs asymmetrically) and
  PyTorch's default initialisation (weights and bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``).
  Parameters ``kernel`` ``(*k, in / groups, out)`` and ``bias`` ``(out,)``.
* ``Dense``: ``nn.Linear`` semantics and initialisation; ``kernel`` ``(in, out)``.
* ``spectral_norm=True`` on ``Conv``/``Dense``: PyTorch's ``spectral_norm`` (one power iteration per
  training call, eps 1e-12) on the weight seen as the PyTorch matrix ``[out, in * k...]``; the
  vectors ``u`` ``(out,)`` and ``v`` ``(in * k...,)`` live in ``batch_stats`` and are updated only
  when called with ``train=True``. In eval mode sigma = ``u . (W v)`` from the stored vectors, so a
  converted ``weight_orig``/``weight_u``/``weight_v`` triple reproduces PyTorch exactly.
* ``BatchNorm``: PyTorch's ``BatchNorm`` (eps 1e-5, momentum 0.1 in PyTorch's convention:
  ``running = 0.9 * running + 0.1 * batch``), normalising with the biased batch variance and
  updating the running variance with the *unbiased* one, as PyTorch does. Under ``jax.jit`` over
  a batch sharded on a mesh the statistics are global-batch statistics (the reference's
  SynchronizedBatchNorm). Variables ``params/{scale,bias}`` and ``batch_stats/{mean,var}``.
* Convolutions go through ``ops.convolution.conv`` (three exact implementations, chosen by
  ``MMFA_JAX_CONV``; see that module).
* ``upsample_nearest`` (pixel repetition, = PyTorch nearest x2), ``avg_pool`` (PyTorch AvgPool, no
  padding) and ``max_pool`` (PyTorch MaxPool, padding with -inf).

Parameters are stored in ``param_dtype`` (float32); ``dtype`` sets the computation dtype (e.g.
bfloat16). BatchNorm statistics are always computed in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mmfa_jax.ops.convolution import (  # noqa: F401  (conv_implementation: tests, tools)
  conv,
  conv_implementation,
  resolved_conv_implementation,
)

Dtype = Any
PaddingLike = int | Sequence[int] | Sequence[tuple[int, int]]


# PyTorch's default kaiming_uniform(a=sqrt(5)) equals U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def shaped_param(
  module: nn.Module, name: str, init_fn: Any, shape: tuple[int, ...], dtype: Dtype
) -> jax.Array:
  """``module.param(name, init_fn, shape, dtype)`` at a fraction of the tracing cost.

  Flax's ``param`` checks an existing parameter by evaluating its initialiser abstractly
  (``jax.eval_shape``, about 4 ms each): 1.9 s of the 2-core CPU's 3.7 s tracing a small
  face-vid2vid model's source encoding and animation, paid again on every start, cache or not.
  Here the shape is known, so an existing parameter is checked against it directly (the same
  ``ScopeParamShapeError``); a missing one is created by ``module.param`` as before (same names,
  same random streams).
  """
  if not module.has_variable("params", name):
    return module.param(name, init_fn, shape, dtype)
  value = module.get_variable("params", name)
  if tuple(np.shape(value)) != tuple(shape):
    raise flax.errors.ScopeParamShapeError(
      name, module.scope.path_text, tuple(np.shape(value)), tuple(shape)
    )
  return value


def _torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
  bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


def _spectral_normalize(module: nn.Module, kernel: jax.Array, train: bool) -> jax.Array:
  """kernel / sigma(W) with W = the kernel in PyTorch's ``[out, -1]`` matrix layout."""
  out_features = kernel.shape[-1]
  # Flax [*k, in, out] -> PyTorch [out, in, *k] -> [out, in * prod(k)].
  torch_layout = jnp.moveaxis(kernel, (-1, -2), (0, 1)) if kernel.ndim > 2 else kernel.T
  matrix = torch_layout.reshape(out_features, -1).astype(jnp.float32)

  def random_unit(size: int) -> jax.Array:
    return _l2_normalize(jax.random.normal(module.make_rng("params"), (size,)))

  u = module.variable("batch_stats", "u", random_unit, matrix.shape[0])
  v = module.variable("batch_stats", "v", random_unit, matrix.shape[1])
  u_value, v_value = u.value, v.value
  if train and not module.is_initializing():
    v_value = _l2_normalize(matrix.T @ u_value)
    u_value = _l2_normalize(matrix @ v_value)
    u_value, v_value = lax.stop_gradient(u_value), lax.stop_gradient(v_value)
    u.value, v.value = u_value, v_value
  sigma = jnp.dot(u_value, matrix @ v_value)
  return (kernel / sigma).astype(kernel.dtype)


def _per_axis(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f"{name} must be an int or have {n} entries, got {value}")
  return value


def _padding_pairs(padding: PaddingLike, n: int) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, int):
    return ((padding, padding),) * n
  padding = tuple(padding)
  if len(padding) != n:
    raise ValueError(f"padding must be an int or have {n} entries, got {padding}")
  return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)


class Conv(nn.Module):
  """PyTorch-style convolution over the spatial axes between batch and channels.

  Attributes:
    features: output channels.
    kernel_size: one int per spatial axis (an int is repeated over 2 axes).
    strides: int or one per spatial axis.
    padding: int, one int per axis (symmetric) or one (low, high) pair per axis; zeros.
    use_bias: add a bias.
    feature_group_count: groups (``in`` and ``features`` must both be divisible by it).
    spectral_norm: PyTorch spectral normalisation of the kernel (module docstring).
    dtype: computation dtype (None: from inputs and params).
    param_dtype: parameter storage dtype.
    precision: convolution precision.
  """

  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: PaddingLike = 0
  use_bias: bool = True
  feature_group_count: int = 1
  spectral_norm: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: lax.PrecisionLike = None

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    """``train`` matters only with ``spectral_norm`` (power iteration, ``batch_stats`` update)."""
    kernel_size = (
      (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    )
    num_spatial = len(kernel_size)
    if inputs.ndim != num_spatial + 2:
      raise ValueError(
        f"{self.name or 'Conv'}: a {num_spatial}-D kernel needs (B, *{num_spatial} spatial, C) "
        f"inputs, got shape {inputs.shape}"
      )
    in_features = inputs.shape[-1]
    if in_features % self.feature_group_count or self.features % self.feature_group_count:
      raise ValueError(
        f"channels {in_features} -> {self.features} not divisible by {self.feature_group_count} groups"
      )
    kernel_shape = (*kernel_size, in_features // self.feature_group_count, self.features)
    kernel = shaped_param(self, "kernel", torch_default_kernel_init, kernel_shape, self.param_dtype)
    if self.spectral_norm:
      kernel = _spectral_normalize(self, kernel, train)
    bias = None
    if self.use_bias:
      fan_in = math.prod(kernel_shape[:-1])
      bias = shaped_param(
        self, "bias", _torch_default_bias_init(fan_in), (self.features,), self.param_dtype
      )
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    strides = _per_axis(self.strides, num_spatial, "strides")
    padding = _padding_pairs(self.padding, num_spatial)
    outputs = conv(
      inputs,
      kernel,
      strides,
      padding,
      feature_group_count=self.feature_group_count,
      precision=self.precision,
    )
    if bias is not None:
      outputs = outputs + bias
    return outputs


class Dense(nn.Module):
  """PyTorch ``nn.Linear`` over the last axis, with PyTorch's default initialisation.

  ``kernel_init`` / ``bias_init`` replace it (e.g. zeros for a head that must start at 0).
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: lax.PrecisionLike = None
  kernel_init: nn.initializers.Initializer | None = None
  bias_init: nn.initializers.Initializer | None = None
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    in_features = inputs.shape[-1]
    kernel_init = self.kernel_init or torch_default_kernel_init
    kernel = shaped_param(
      self, "kernel", kernel_init, (in_features, self.features), self.param_dtype
    )
    if self.spectral_norm:
      kernel = _spectral_normalize(self, kernel, train)
    bias = None
    if self.use_bias:
      bias_init = self.bias_init or _torch_default_bias_init(in_features)
      bias = shaped_param(self, "bias", bias_init, (self.features,), self.param_dtype)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    outputs = jnp.matmul(inputs, kernel, precision=self.precision)
    if bias is not None:
      outputs = outputs + bias
    return outputs


class BatchNorm(nn.Module):
  """PyTorch BatchNorm{1,2,3}d over the last (channel) axis.

  Attributes:
    use_running_average: eval mode (use ``batch_stats``) if True; may also be given at call time.
    momentum: PyTorch convention, weight of the new batch statistic (0.1).
    epsilon: added to the variance (1e-5).
    axis_name: for use inside ``shard_map``/``vmap``: statistics are averaged over this axis too.
      Not needed under ``jax.jit`` with a sharded batch, where the batch is already global.
    dtype: output dtype (None: the input dtype).
    param_dtype: dtype of scale and bias.
  """

  use_running_average: bool | None = None
  momentum: float = 0.1
  epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = nn.merge_param(
      "use_running_average", self.use_running_average, use_running_average
    )
    features = inputs.shape[-1]
    reduce_axes = tuple(range(inputs.ndim - 1))
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    scale = shaped_param(self, "scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = shaped_param(self, "bias", nn.initializers.zeros, (features,), self.param_dtype)

    values = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
    if use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      # Without axis_name the gradient through the statistics is _batch_normalize's closed form,
      # so they are computed from a stopped copy (no JVP traced for them).
      observed = values if self.axis_name is not None else lax.stop_gradient(values)
      mean = jnp.mean(observed, axis=reduce_axes)
      count = math.prod(inputs.shape[:-1])
      if self.axis_name is not None:
        mean = lax.pmean(mean, self.axis_name)
        count = count * lax.psum(1, self.axis_name)
      var = jnp.mean(jnp.square(observed - mean), axis=reduce_axes)  # biased, two-pass
      if self.axis_name is not None:
        var = lax.pmean(var, self.axis_name)
      if not self.is_initializing():
        unbiased = var * (count / max(count - 1, 1))
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased
    if use_running_average or self.axis_name is not None:
      multiplier = scale.astype(values.dtype) * lax.rsqrt(var + self.epsilon)
      outputs = (values - mean) * multiplier + bias.astype(values.dtype)
    else:
      outputs = _batch_normalize(
        values, mean, var, scale.astype(values.dtype), bias.astype(values.dtype), self.epsilon
      )
    return outputs.astype(self.dtype or inputs.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _batch_normalize(
  values: jax.Array,
  mean: jax.Array,
  var: jax.Array,
  scale: jax.Array,
  bias: jax.Array,
  epsilon: float,
) -> jax.Array:
  """Training-mode BatchNorm of ``values`` (..., C) with its own batch ``mean`` and ``var`` (C,).

  The gradient is the closed form through the batch statistics (the mean and variance are
  functions of ``values``; their own cotangents are zero), so autodiff does not differentiate
  the two reductions step by step: per layer, the backward is two reductions and one elementwise
  pass. For XLA:CPU that is about half the kernels of the differentiated formula, the largest
  share of the training step's compile time after the convolutions.
  """
  return (values - mean) * (scale * lax.rsqrt(var + epsilon)) + bias


def _batch_normalize_forward(values, mean, var, scale, bias, epsilon):
  inv_std = lax.rsqrt(var + epsilon)  # (C,)
  outputs = (values - mean) * (scale * inv_std) + bias
  return outputs, (values, mean, inv_std, scale)


def _batch_normalize_backward(epsilon, residuals, cotangent):
  del epsilon
  values, mean, inv_std, scale = residuals
  axes = tuple(range(values.ndim - 1))
  count = math.prod(values.shape[:-1])
  normalized = (values - mean) * inv_std  # (..., C)
  d_bias = jnp.sum(cotangent, axis=axes)  # (C,)
  d_scale = jnp.sum(cotangent * normalized, axis=axes)  # (C,)
  d_values = (scale * inv_std / count) * (count * cotangent - d_bias - normalized * d_scale)
  return d_values, jnp.zeros_like(mean), jnp.zeros_like(inv_std), d_scale, d_bias


_batch_normalize.defvjp(_batch_normalize_forward, _batch_normalize_backward)


def sequential_running_statistics(
  initial: Any, per_call: Any, momentum: float = BatchNorm.momentum
) -> Any:
  """BatchNorm running statistics after N training calls in order, from what each call alone
  leaves.

  A batched (``jax.vmap``) run of N calls on the same variables gives, per call i, the statistics
  ``(1 - m) r + m b_i`` of one call from ``r``; calls one after another give
  ``(1 - m)^N r + sum_i (1 - m)^(N - i) m b_i``. ``initial`` is a ``batch_stats`` tree, ``per_call``
  the same with a leading axis N; leaves the calls did not change come back exactly. Only
  BatchNorm's ``mean`` and ``var`` compose this way; any other statistic raises ``ValueError``.
  """
  paths_and_starts, structure = jax.tree_util.tree_flatten_with_path(initial)
  calls = jax.tree.leaves(per_call)
  for path, _ in paths_and_starts:
    if getattr(path[-1], "key", None) not in ("mean", "var"):
      raise ValueError(
        f"cannot compose running statistic {jax.tree_util.keystr(path)}: only BatchNorm's "
        "mean and var are moving averages"
      )
  if not calls:
    return initial
  # All statistics as one vector: a few operations in total instead of a dozen per statistic
  # (the motion estimator has hundreds), which is tracing time and XLA kernels.
  starts = [start for _, start in paths_and_starts]
  count = calls[0].shape[0]
  start = jnp.concatenate([jnp.ravel(s) for s in starts])  # (T,)
  stacked = jnp.concatenate([jnp.reshape(c, (count, -1)) for c in calls], axis=1)  # (N, T)
  decay = 1.0 - momentum
  weights = decay ** jnp.arange(count - 1, -1, -1, dtype=stacked.dtype)  # (N,)
  composed = decay**count * start + jnp.tensordot(weights, stacked - decay * start, axes=1)
  # Elements every call left unchanged come back exactly (they compose to it up to rounding).
  composed = jnp.where(jnp.all(stacked == start[None], axis=0), start, composed)
  sizes = np.cumsum([math.prod(s.shape) for s in starts])[:-1]
  pieces = jnp.split(composed, sizes)
  return jax.tree.unflatten(structure, [p.reshape(s.shape) for p, s in zip(pieces, starts)])


def upsample_nearest(inputs: jax.Array, factors: Sequence[int]) -> jax.Array:
  """Repeats each element ``factors[i]`` times along spatial axis i (PyTorch nearest upsampling).

  ``inputs`` is ``(B, *spatial, C)``; e.g. factors ``(2, 2)`` for UpBlock2d, ``(1, 2, 2)`` for
  UpBlock3d.
  """
  if len(factors) != inputs.ndim - 2:
    raise ValueError(f"{len(factors)} factors for {inputs.ndim - 2} spatial axes")
  for axis, factor in enumerate(factors, start=1):
    if factor != 1:
      inputs = jnp.repeat(inputs, factor, axis=axis)
  return inputs


def avg_pool(inputs: jax.Array, window: Sequence[int]) -> jax.Array:
  """PyTorch AvgPool with kernel = stride = ``window`` and no padding (floors odd sizes)."""
  return nn.avg_pool(inputs, tuple(window), strides=tuple(window), padding="VALID")


def max_pool(
  inputs: jax.Array, window: Sequence[int], strides: Sequence[int], padding: int
) -> jax.Array:
  """PyTorch MaxPool: symmetric padding with -inf (e.g. window (3, 3), strides (2, 2), padding 1)."""
  pads = tuple((padding, padding) for _ in window)
  return nn.max_pool(inputs, tuple(window), strides=tuple(strides), padding=pads)


class InstanceNorm(nn.Module):
  """PyTorch ``InstanceNorm2d``: per-sample, per-channel statistics over the spatial axes (biased
  variance, eps 1e-5); ``affine`` adds ``scale`` and ``bias`` params. No running statistics."""

  affine: bool = False
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    values = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
    axes = tuple(range(1, inputs.ndim - 1))
    mean = jnp.mean(values, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(values - mean), axis=axes, keepdims=True)
    outputs = (values - mean) * lax.rsqrt(var + self.epsilon)
    if self.affine:
      features = inputs.shape[-1]
      outputs = outputs * shaped_param(
        self, "scale", nn.initializers.ones, (features,), self.param_dtype
      )
      outputs = outputs + shaped_param(
        self, "bias", nn.initializers.zeros, (features,), self.param_dtype
      )
    return outputs.astype(self.dtype or inputs.dtype)
