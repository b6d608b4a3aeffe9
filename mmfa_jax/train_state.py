"""Train states, optimizers with frozen sub-networks, and non-finite update skipping.

A ``TrainState`` holds one network's ``params``, ``batch_stats`` (BatchNorm statistics and
spectral-norm vectors) and optimizer state. Frozen parts (Hopenet inside the MMFA motion
estimator) stay in ``params`` so one ``apply`` sees the whole model, but their updates are zero
(``optax.set_to_zero``), so they never change and hold no Adam moments. ``apply_gradients`` skips
the whole update when any gradient is not finite and reports it, so one bad batch cannot poison the
run.

The trained parameters are updated as one flat float32 vector (``optax.flatten``): Adam's moments
are two vectors, not two trees, and the finiteness check is one reduction. For XLA that is a few
large kernels instead of several small ones per parameter leaf: the synthetic generator's update
(427 leaves) compiles to 382 fusions instead of 2,181 and in 5.1 s instead of 9.2 s on the 2-core
CPU; the values are those of the per-leaf update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

FROZEN_PREFIXES = (("motion_estimator", "pose"),)  # Hopenet: rotation comes from it, frozen


class TrainState(flax.struct.PyTreeNode):
  """``step`` (int32 scalar), ``params``, ``batch_stats``, ``opt_state``; ``tx`` is static."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: Any, batch_stats: Any, tx: optax.GradientTransformation) -> TrainState:
    return cls(jnp.zeros((), jnp.int32), params, batch_stats, tx.init(params), tx)


def step_schedule(
  learning_rate: float, milestones: Sequence[int] = (), decay: float = 0.1
) -> optax.Schedule:
  """The reference's MultiStepLR: ``learning_rate`` times ``decay`` from each milestone on (steps).

  Traced counts use optax's piecewise-constant schedule; a plain int (the loop logging the rate)
  is answered in Python, so logging compiles nothing.
  """
  boundaries = {int(m): decay for m in milestones}
  traced = optax.piecewise_constant_schedule(learning_rate, boundaries)

  def schedule(count: Any) -> Any:
    if isinstance(count, int | np.integer):
      return learning_rate * decay ** sum(count >= boundary for boundary in boundaries)
    return traced(count)

  return schedule


def frozen_labels(params: Any, frozen_prefixes: Sequence[tuple[str, ...]] = FROZEN_PREFIXES) -> Any:
  """A pytree like ``params`` of ``'frozen'`` / ``'trained'`` labels, by module-path prefix."""

  def label(path: Sequence[Any], _: Any) -> str:
    names = tuple(getattr(key, "key", str(key)) for key in path)
    return "frozen" if any(names[: len(p)] == tuple(p) for p in frozen_prefixes) else "trained"

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
  params: Any,
  learning_rate: float | optax.Schedule,
  *,
  b1: float = 0.5,
  b2: float = 0.999,
  eps: float = 1e-8,
  clip_norm: float | None = None,
  frozen_prefixes: Sequence[tuple[str, ...]] = FROZEN_PREFIXES,
) -> optax.GradientTransformation:
  """Adam with the reference's betas (0.5, 0.999), optional global-norm clipping, frozen parts zeroed.

  The trained leaves go through the optimizer as one flat vector (module docstring); the moments in
  ``opt_state`` are flat vectors over the trained leaves in ``jax.tree.leaves`` order.
  """
  adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  trained = optax.chain(optax.clip_by_global_norm(clip_norm), adam) if clip_norm else adam
  return optax.multi_transform(
    {"trained": optax.flatten(trained), "frozen": optax.set_to_zero()},
    frozen_labels(params, frozen_prefixes),
  )


def all_finite(tree: Any) -> jax.Array:
  """True when every leaf of ``tree`` is finite (a scalar bool array).

  The leaves are checked as one concatenated vector: one reduction, not one per leaf.
  """
  leaves = [jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)]
  if not leaves:
    return jnp.array(True)
  dtype = jnp.result_type(*leaves)
  return jnp.all(jnp.isfinite(jnp.concatenate([leaf.astype(dtype) for leaf in leaves])))


def apply_gradients(
  state: TrainState, grads: Any, batch_stats: Any, *, loss: jax.Array | None = None
) -> tuple[TrainState, jax.Array]:
  """One optimizer step; returns ``(new_state, skipped)``.

  When any gradient (or ``loss``) is not finite the parameters, batch statistics and optimizer
  state stay as they were and ``skipped`` is 1; the step counter advances either way.
  """
  finite = all_finite(grads) if loss is None else all_finite(grads) & jnp.isfinite(loss)

  def update(_: None) -> tuple[Any, Any, Any]:
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), batch_stats, opt_state

  def keep(_: None) -> tuple[Any, Any, Any]:
    return state.params, state.batch_stats, state.opt_state

  # A conditional, not a select per leaf: far less for XLA to compile and nothing computed twice.
  params, new_stats, opt_state = jax.lax.cond(finite, update, keep, None)
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state
  )
  return new_state, (~finite).astype(jnp.int32)
