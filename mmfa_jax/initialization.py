"""Variables without compiling: a module's initialisers evaluated on the host with NumPy.

``jax.jit(model.init)`` compiles a program with one random-number kernel per parameter tensor
(the forward pass is dead code and removed, but hundreds of initialiser kernels remain): 11 s on a
2-core CPU for the small synthetic model, 204 s on an H200 for vox-256. ``init_variables`` compiles
nothing at all:

1. ``jax.make_jaxpr`` traces ``module.init`` (shape inference, no XLA);
2. the equations that do not feed a variable (the whole forward pass) are dropped;
3. the rest, the initialisers themselves (uniform, normal, ones, zeros, their scaling) and the key
   derivations, is evaluated by a small NumPy interpreter. Random bits come from NumPy's Philox
   generator keyed by the JAX key's data; ``fold_in`` and ``split`` derive keys with NumPy's
   ``SeedSequence``.

The result has the tree structure, shapes and dtypes of ``module.init``, its values have the
initialisers' distributions, and it is deterministic for a key, the same on every platform and in
every process. The values are not bit-equal to ``module.init``'s (that would need JAX's threefry,
hundreds of times slower in NumPy). A primitive the interpreter does not know is evaluated by JAX
instead (compiling that one operation) and logged once.

``evaluate_on_host(fn, *args)`` is the same for any function whose outputs do not need the
accelerator, e.g. an optimizer's ``init`` or a whole ``TrainState.create``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import scipy.special
from absl import logging

# Tags that keep the three key derivations apart.
_FOLD_IN, _SPLIT, _BITS, _SEED = 0x464F4C44, 0x53504C54, 0x42495453, 0x53454544


@dataclasses.dataclass(frozen=True)
class _Keys:
  """A JAX key array on the host: ``data`` is ``(*batch, *key_shape)`` uint32; ``impl`` names the
  PRNG implementation (for turning the keys back into JAX keys)."""

  data: np.ndarray
  impl: str
  key_shape: tuple[int, ...]

  @classmethod
  def of(cls, data: np.ndarray, impl: Any) -> _Keys:
    """From key data and a jax ``PRNGImpl`` (as primitives carry it)."""
    return cls(np.asarray(data, np.uint32), impl.name, tuple(impl.key_shape))

  @property
  def key_ndim(self) -> int:
    return len(self.key_shape)

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return self.data.shape[: self.data.ndim - self.key_ndim]

  def rows(self) -> np.ndarray:
    """The keys as ``(N, words)``."""
    return self.data.reshape(-1, math.prod(self.key_shape))

  def with_data(self, data: np.ndarray) -> _Keys:
    return dataclasses.replace(self, data=np.ascontiguousarray(data, dtype=np.uint32))


def _sequence(words: np.ndarray, *extra: int) -> np.random.SeedSequence:
  return np.random.SeedSequence([int(w) for w in words] + [int(e) for e in extra])


def _derive(keys: _Keys, shape: Sequence[int], *extra: int) -> _Keys:
  """New keys of batch shape ``keys.batch_shape + shape`` (``split``)."""
  words = math.prod(keys.key_shape)
  count = math.prod(shape)
  rows = [_sequence(row, *extra).generate_state(count * words, np.uint32) for row in keys.rows()]
  data = np.stack(rows).reshape(*keys.batch_shape, *shape, *keys.key_shape)
  return keys.with_data(data)


def _random_bits(keys: _Keys, bit_width: int, shape: Sequence[int]) -> np.ndarray:
  dtype = np.dtype(f"uint{bit_width}")
  count = math.prod(shape)
  outputs = []
  for row in keys.rows():
    generator = np.random.Philox(_sequence(row, _BITS))
    raw = generator.random_raw(-(-count * bit_width // 64))  # uint64 words
    outputs.append(raw.view(dtype)[:count].reshape(shape))
  return np.stack(outputs).reshape(*keys.batch_shape, *shape)


def _fold_in(keys: _Keys, messages: np.ndarray) -> _Keys:
  batch = np.broadcast_shapes(keys.batch_shape, np.shape(messages))
  rows = np.broadcast_to(keys.data, (*batch, *keys.key_shape)).reshape(len(keys.rows()), -1)
  flat_messages = np.broadcast_to(messages, batch).reshape(-1)
  words = rows.shape[-1]
  data = [
    _sequence(row, _FOLD_IN, int(m)).generate_state(words, np.uint32)
    for row, m in zip(rows, flat_messages)
  ]
  return keys.with_data(np.stack(data).reshape(*batch, *keys.key_shape))


def _random_seed(seeds: np.ndarray, impl: Any) -> _Keys:
  words = math.prod(impl.key_shape)
  data = [
    _sequence(np.array([int(s) & 0xFFFFFFFF, (int(s) >> 32) & 0xFFFFFFFF]), _SEED).generate_state(
      words, np.uint32
    )
    for s in np.asarray(seeds).reshape(-1)
  ]
  return _Keys.of(np.stack(data).reshape(*np.shape(seeds), *impl.key_shape), impl)


# --------------------------------------------------------------------------------------------
# Array primitives


def _broadcast_in_dim(x: np.ndarray, shape: Sequence[int], broadcast_dimensions: Sequence[int]):
  expanded = [1] * len(shape)
  for axis, size in zip(broadcast_dimensions, np.shape(x)):
    expanded[axis] = size
  return np.broadcast_to(np.reshape(x, expanded), shape)


def _slice(x: np.ndarray, start_indices, limit_indices, strides):
  strides = strides or (1,) * len(start_indices)
  return x[tuple(slice(a, b, s) for a, b, s in zip(start_indices, limit_indices, strides))]


def _div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  if np.issubdtype(np.result_type(x, y), np.integer):  # XLA rounds towards zero
    quotient = np.abs(x) // np.abs(y)
    return np.where((np.sign(x) * np.sign(y)) < 0, -quotient, quotient)
  return np.divide(x, y)


def _shift_right_logical(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  unsigned = x.view(np.dtype(f"uint{x.dtype.itemsize * 8}")) if x.dtype.kind == "i" else x
  return np.right_shift(unsigned, np.asarray(shift).astype(unsigned.dtype)).view(x.dtype)


class _NoNumpyRule(Exception):
  """Raised by a NumPy rule for a case it does not cover: JAX evaluates that equation instead."""


def _bitcast(x: np.ndarray, new_dtype: Any) -> np.ndarray:
  new_dtype = np.dtype(new_dtype)
  if new_dtype.itemsize != np.asarray(x).dtype.itemsize:
    raise _NoNumpyRule("bitcast between widths")  # changes the shape: left to JAX
  return np.ascontiguousarray(x).view(new_dtype)


def _select_n(which: np.ndarray, *cases: np.ndarray) -> np.ndarray:
  if len(cases) == 1:
    return cases[0]
  index = np.asarray(which).astype(np.int64)
  return np.choose(index, np.broadcast_arrays(*cases))


def _iota(dtype: Any, shape: Sequence[int], dimension: int, **_: Any) -> np.ndarray:
  ramp = np.arange(shape[dimension], dtype=dtype)
  return _broadcast_in_dim(ramp, shape, (dimension,))


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
  return lambda x, **_: fn(x)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
  return lambda x, y, **_: fn(x, y)


_ARRAY_RULES: dict[str, Callable[..., Any]] = {
  "add": _binary(np.add),
  "sub": _binary(np.subtract),
  "mul": _binary(np.multiply),
  "div": _binary(_div),
  "rem": _binary(np.fmod),
  "max": _binary(np.maximum),
  "min": _binary(np.minimum),
  "pow": _binary(np.power),
  "and": _binary(np.bitwise_and),
  "or": _binary(np.bitwise_or),
  "xor": _binary(np.bitwise_xor),
  "eq": _binary(np.equal),
  "ne": _binary(np.not_equal),
  "lt": _binary(np.less),
  "le": _binary(np.less_equal),
  "gt": _binary(np.greater),
  "ge": _binary(np.greater_equal),
  "shift_left": _binary(np.left_shift),
  "shift_right_logical": _binary(_shift_right_logical),
  "shift_right_arithmetic": _binary(np.right_shift),
  "neg": _unary(np.negative),
  "not": _unary(np.invert),
  "abs": _unary(np.abs),
  "sign": _unary(np.sign),
  "floor": _unary(np.floor),
  "ceil": _unary(np.ceil),
  "round": _unary(np.round),
  "sqrt": _unary(np.sqrt),
  "rsqrt": _unary(lambda x: 1 / np.sqrt(x)),
  "exp": _unary(np.exp),
  "log": _unary(np.log),
  "log1p": _unary(np.log1p),
  "tanh": _unary(np.tanh),
  "logistic": _unary(scipy.special.expit),
  "erf": _unary(scipy.special.erf),
  "erf_inv": _unary(scipy.special.erfinv),
  "square": _unary(np.square),
  "is_finite": _unary(np.isfinite),
  "copy": _unary(np.array),
  "copy_p": _unary(np.array),
  "integer_pow": lambda x, y: np.power(x, y),
  "clamp": lambda lo, x, hi: np.clip(x, lo, hi),
  "select_n": _select_n,
  "convert_element_type": lambda x, new_dtype, **_: np.asarray(x).astype(new_dtype),
  "bitcast_convert_type": lambda x, new_dtype: _bitcast(x, new_dtype),
  "broadcast_in_dim": lambda x, shape, broadcast_dimensions, **_: _broadcast_in_dim(
    x, shape, broadcast_dimensions
  ),
  "reshape": lambda x, new_sizes, **_: np.reshape(x, new_sizes),
  "transpose": lambda x, permutation: np.transpose(x, permutation),
  "squeeze": lambda x, dimensions: np.squeeze(x, axis=tuple(dimensions)),
  "expand_dims": lambda x, dimensions: np.expand_dims(x, tuple(dimensions)),
  "slice": _slice,
  "concatenate": lambda *xs, dimension: np.concatenate(xs, axis=dimension),
  "iota": _iota,
  "reduce_sum": lambda x, axes, **_: np.sum(x, axis=tuple(axes)),
  "reduce_max": lambda x, axes, **_: np.max(x, axis=tuple(axes)),
  "reduce_min": lambda x, axes, **_: np.min(x, axis=tuple(axes)),
  "reduce_prod": lambda x, axes, **_: np.prod(x, axis=tuple(axes)),
}

# Structural operations on key arrays act on the batch dimensions of the key data.
_KEY_RULES: dict[str, Callable[..., _Keys]] = {
  "slice": lambda k, start_indices, limit_indices, strides: k.with_data(
    _slice(
      k.data,
      (*start_indices, *(0,) * k.key_ndim),
      (*limit_indices, *k.key_shape),
      (*(strides or (1,) * len(start_indices)), *(1,) * k.key_ndim),
    )
  ),
  "squeeze": lambda k, dimensions: k.with_data(np.squeeze(k.data, axis=tuple(dimensions))),
  "reshape": lambda k, new_sizes, **_: k.with_data(k.data.reshape(*new_sizes, *k.key_shape)),
  "broadcast_in_dim": lambda k, shape, broadcast_dimensions, **_: k.with_data(
    _broadcast_in_dim(
      k.data,
      (*shape, *k.key_shape),
      (*broadcast_dimensions, *range(len(shape), len(shape) + k.key_ndim)),
    )
  ),
  "copy": lambda k: k,
  "copy_p": lambda k: k,
}

_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
_CALL_PRIMITIVES = (
  "pjit",
  "jit",
  "closed_call",
  "core_call",
  "custom_jvp_call",
  "custom_vjp_call",
  "custom_vjp_call_jaxpr",
  "checkpoint",
  "remat",
)


# --------------------------------------------------------------------------------------------
# The interpreter


def _live_equations(jaxpr: jex.Jaxpr) -> list[jex.JaxprEqn]:
  """The equations some output depends on, in order (dead-code elimination)."""
  live = {v for v in jaxpr.outvars if isinstance(v, jex.Var)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    if any(v in live for v in eqn.outvars if isinstance(v, jex.Var)):
      kept.append(eqn)
      live.update(v for v in eqn.invars if isinstance(v, jex.Var))
  return kept[::-1]


def _to_host(value: Any) -> Any:
  if isinstance(value, _Keys):
    return value
  if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
    data = np.asarray(jax.random.key_data(value), np.uint32)
    return _Keys(data, str(jax.random.key_impl(value)), data.shape[value.ndim :])
  return np.asarray(value)


def _to_jax(value: Any) -> Any:
  if isinstance(value, _Keys):
    return jax.random.wrap_key_data(value.data, impl=value.impl)
  return jnp.asarray(value)


_fallbacks_logged: set[str] = set()


def _evaluate_with_jax(eqn: jex.JaxprEqn, inputs: list[Any]) -> list[Any]:
  """One equation by JAX itself (compiles that operation): primitives the interpreter lacks."""
  name = eqn.primitive.name
  if name not in _fallbacks_logged:
    _fallbacks_logged.add(name)
    logging.info("initialization: primitive %r evaluated by JAX (compiles it)", name)
  outputs = eqn.primitive.bind(*[_to_jax(x) for x in inputs], **eqn.params)
  outputs = outputs if eqn.primitive.multiple_results else [outputs]
  return [_to_host(x) for x in outputs]


def _evaluate_equation(eqn: jex.JaxprEqn, inputs: list[Any]) -> list[Any]:
  name, params = eqn.primitive.name, eqn.params
  if name in _CALL_PRIMITIVES:
    inner = next((params[p] for p in _CALL_PARAMS if p in params), None)
    if inner is not None:
      if isinstance(inner, jex.ClosedJaxpr):
        return _evaluate_jaxpr(inner.jaxpr, inner.consts, inputs)
      return _evaluate_jaxpr(inner, (), inputs)
  if name == "random_bits":
    return [_random_bits(inputs[0], params["bit_width"], params["shape"])]
  if name == "random_split":
    return [_derive(inputs[0], params["shape"], _SPLIT)]
  if name == "random_fold_in":
    return [_fold_in(inputs[0], np.asarray(inputs[1]))]
  if name == "random_seed":
    return [_random_seed(inputs[0], params["impl"])]
  if name == "random_wrap":
    return [_Keys.of(inputs[0], params["impl"])]
  if name in ("random_unwrap", "random_key_data"):
    return [inputs[0].data]
  if inputs and isinstance(inputs[0], _Keys):
    rule = _KEY_RULES.get(name)
    return [rule(*inputs, **params)] if rule else _evaluate_with_jax(eqn, inputs)
  rule = _ARRAY_RULES.get(name)
  if rule is None:
    return _evaluate_with_jax(eqn, inputs)
  try:
    output = rule(*[np.asarray(x) for x in inputs], **params)
  except (_NoNumpyRule, TypeError):  # TypeError: parameters a newer jax added to the primitive
    return _evaluate_with_jax(eqn, inputs)
  aval = eqn.outvars[0].aval
  output = np.asarray(output, dtype=aval.dtype)
  if output.shape != tuple(aval.shape):
    raise AssertionError(f"initialization: {name} gave shape {output.shape}, want {aval.shape}")
  return [output]


def _evaluate_jaxpr(jaxpr: jex.Jaxpr, consts: Sequence[Any], inputs: Sequence[Any]) -> list[Any]:
  env: dict[jex.Var, Any] = {}

  def read(atom: Any) -> Any:
    return atom.val if isinstance(atom, jex.Literal) else env[atom]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = _to_host(value)
  for var, value in zip(jaxpr.invars, inputs):
    env[var] = value
  for eqn in _live_equations(jaxpr):
    outputs = _evaluate_equation(eqn, [read(v) for v in eqn.invars])
    for var, value in zip(eqn.outvars, outputs):
      if isinstance(var, jex.Var):
        env[var] = value
  return [read(v) for v in jaxpr.outvars]


def evaluate_on_host(fn: Callable[..., Any], *args: Any) -> Any:
  """``fn(*args)`` computed with NumPy, compiling nothing; outputs as NumPy arrays.

  For functions made of initialisers (random draws, constants, their arithmetic): the equations no
  output needs (a forward pass traced for shape inference) are never evaluated. Random draws use
  NumPy's Philox keyed by the JAX keys in ``args``, so values are deterministic for those keys but
  not equal to ``fn(*args)`` under JAX; everything else is computed as JAX would. Key arrays among
  the outputs come back as JAX key arrays.
  """
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
  flat_args = [_to_host(x) for x in jax.tree.leaves(args)]
  outputs = _evaluate_jaxpr(closed.jaxpr, closed.consts, flat_args)
  outputs = [_to_jax(x) if isinstance(x, _Keys) else np.asarray(x) for x in outputs]
  return jax.tree.unflatten(jax.tree.structure(out_shape), outputs)


def init_variables(
  module: Any, rngs: Any, *args: Any, method: Any = None, **kwargs: Any
) -> dict[str, Any]:
  """``module.init(rngs, *args, method=method, **kwargs)`` without compiling anything.

  ``rngs`` is a key, an int seed, or a dict of keys (flax's ``init`` convention). Returns the
  variable dict (``{'params': ..., 'batch_stats': ...}``) with NumPy leaves, of the same tree
  structure, shapes and dtypes as ``module.init``; see the module docstring for the values.
  """

  seeded = isinstance(rngs, int | np.integer)

  def init(rngs: Any) -> Any:
    if seeded:  # the key is derived inside the trace, so the interpreter makes it too
      rngs = jax.random.key(rngs)
    return module.init(rngs, *args, method=method, **kwargs)

  return evaluate_on_host(init, np.int32(rngs) if seeded else rngs)
