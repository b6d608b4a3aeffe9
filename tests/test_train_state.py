"""Optimizer schedule, the flat Adam update, non-finite update skipping, the earlier layout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfa_jax.train_state import (
  TrainState,
  apply_gradients,
  check_prefixes,
  current_opt_state,
  legacy_opt_state,
  make_optimizer,
  step_schedule,
)


def _params():
  return {
    "motion_estimator": {"kp": {"w": jnp.ones(3)}},
    "image_generator": {"w": jnp.ones(2)},
  }


def test_step_schedule_decays_at_milestones():
  schedule = step_schedule(2e-4, milestones=(10, 20))
  steps = [0, 9, 10, 19, 20, 25]
  want = [2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6]
  # Python ints (the loop's logging) and traced counts (the optimizer) give the same rates.
  np.testing.assert_allclose([schedule(s) for s in steps], want, rtol=1e-6)
  traced = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(np.asarray(traced), want, rtol=1e-6)


def test_step_schedule_warms_up_linearly_then_decays():
  schedule = step_schedule(1e-3, milestones=(6,), decay=0.5, warmup_steps=4)
  steps = [0, 1, 3, 4, 5, 6, 9]
  want = [2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4]
  np.testing.assert_allclose([schedule(s) for s in steps], want, rtol=1e-6)
  traced = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(np.asarray(traced), want, rtol=1e-6)
  # Adam's first update with a warm-up moves a parameter by the first step's rate.
  state = TrainState.create({"w": jnp.ones(2)}, {}, make_optimizer(schedule))
  state, _ = apply_gradients(state, {"w": jnp.ones(2)}, {})
  np.testing.assert_allclose(state.params["w"], np.full(2, 1 - 2.5e-4), rtol=1e-6)
  with pytest.raises(ValueError, match="warmup_steps"):
    step_schedule(1e-3, warmup_steps=-1)


def test_every_parameter_trains():
  params = _params()
  state = TrainState.create(params, {"bn": jnp.zeros(1)}, make_optimizer(0.1))
  grads = {"motion_estimator": {"kp": {"w": jnp.ones(3)}}, "image_generator": {"w": -jnp.ones(2)}}
  state, skipped = apply_gradients(state, grads, {"bn": jnp.ones(1)})
  assert int(skipped) == 0 and int(state.step) == 1
  # Adam's first step moves each trained parameter by the learning rate against the gradient sign.
  np.testing.assert_allclose(
    state.params["motion_estimator"]["kp"]["w"], np.full(3, 0.9), rtol=1e-5
  )
  np.testing.assert_allclose(state.params["image_generator"]["w"], np.full(2, 1.1), rtol=1e-5)
  np.testing.assert_array_equal(state.batch_stats["bn"], np.ones(1))


def test_non_finite_gradients_skip_the_update():
  params = _params()
  state = TrainState.create(params, {"bn": jnp.zeros(1)}, make_optimizer(0.1, clip_norm=1.0))
  grads = {
    "motion_estimator": {"kp": {"w": jnp.array([1.0, jnp.nan, 0.0])}},
    "image_generator": {"w": jnp.ones(2)},
  }
  new_state, skipped = apply_gradients(state, grads, {"bn": jnp.ones(1)})
  assert int(skipped) == 1 and int(new_state.step) == 1
  for new, old in ((new_state.params, state.params), (new_state.batch_stats, state.batch_stats)):
    jax.tree.map(np.testing.assert_array_equal, new, old)
  jax.tree.map(np.testing.assert_array_equal, new_state.opt_state, state.opt_state)
  finite = {"motion_estimator": {"kp": {"w": jnp.zeros(3)}}, "image_generator": {"w": jnp.ones(2)}}
  _, skipped = apply_gradients(state, finite, state.batch_stats, loss=jnp.array(jnp.inf))
  assert int(skipped) == 1


def test_parameter_average_follows_its_formula():
  """``ema = d * ema + (1 - d) * params`` after each update, ``d = min(decay, (1 + n) / (10 + n))``
  for update ``n``; a skipped update leaves it; hand-computed with plain SGD."""
  params = {"w": jnp.array([1.0, -2.0])}
  state = TrainState.create(params, {}, optax.sgd(0.5), ema_decay=0.2)
  assert state.averaged_params is state.ema_params
  step = jax.jit(apply_gradients)
  grads = [np.array([1.0, 2.0]), np.array([-4.0, 0.5]), np.array([2.0, -6.0])]
  weights, average = np.array([1.0, -2.0]), np.array([1.0, -2.0])
  for n, grad in enumerate(grads):
    state, skipped = step(state, {"w": jnp.asarray(grad, jnp.float32)}, {})
    weights = weights - 0.5 * grad
    decay = min(0.2, (1 + n) / (10 + n))  # 0.1, 0.1818, then the cap 0.2
    average = decay * average + (1 - decay) * weights
    assert int(skipped) == 0
    np.testing.assert_allclose(state.params["w"], weights, rtol=1e-6)
    np.testing.assert_allclose(state.ema_params["w"], average, rtol=1e-6)
  kept, skipped = step(state, {"w": jnp.array([jnp.nan, 1.0])}, {})
  assert int(skipped) == 1
  np.testing.assert_array_equal(kept.ema_params["w"], state.ema_params["w"])
  plain = TrainState.create(params, {}, optax.sgd(0.5))
  assert plain.ema_params is None and plain.averaged_params is plain.params
  assert apply_gradients(plain, {"w": jnp.ones(2)}, {})[0].ema_params is None
  with pytest.raises(ValueError, match="ema_decay"):
    TrainState.create(params, {}, optax.sgd(0.5), ema_decay=1.0)


def test_a_run_without_an_average_resumes_with_one(tmp_path):
  """Turning ``optim.ema_decay`` on for a resumed run: the average starts at the restored
  parameters; a checkpoint that has one restores it as saved."""
  from mmfa_jax.checkpoints import TrainingCheckpoints
  from mmfa_jax.train_loop import restore_states

  params = {"image_generator": _random_tree(0, [(3, 2), (4,)])}
  grads = {"image_generator": _random_tree(1, [(3, 2), (4,)])}
  plain, _ = apply_gradients(TrainState.create(params, {}, make_optimizer(0.1)), grads, {})
  averaged = TrainState.create(params, {}, make_optimizer(0.1), ema_decay=0.5)
  averaged, _ = apply_gradients(averaged, grads, {})
  checkpoints = TrainingCheckpoints(tmp_path / "ckpt", async_save=False)
  checkpoints.save(1, plain, plain)
  checkpoints.save(2, averaged, plain)
  checkpoints.wait()
  fresh = TrainState.create(params, {}, make_optimizer(0.1), ema_decay=0.5)
  targets = jax.eval_shape(lambda: (fresh, fresh))
  generator, _ = restore_states(checkpoints, 1, targets)
  jax.tree.map(np.testing.assert_array_equal, generator.ema_params, plain.params)
  jax.tree.map(np.testing.assert_array_equal, generator.params, plain.params)
  generator, _ = restore_states(checkpoints, 2, (targets[0], jax.eval_shape(lambda: plain)))
  jax.tree.map(np.testing.assert_array_equal, generator.ema_params, averaged.ema_params)
  assert not np.allclose(
    averaged.ema_params["image_generator"]["leaf0"], averaged.params["image_generator"]["leaf0"]
  )
  checkpoints.close()


def _random_tree(seed: int, shapes) -> dict:
  rng = np.random.default_rng(seed)
  return {f"leaf{i}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(shapes)}


def test_flat_update_equals_per_leaf_adam_with_clipping():
  """The flattened optimizer gives the per-leaf optax chain's values, step after step."""
  shapes = [(3, 4), (5,), (2, 3, 2), (1,), (7, 2)]
  params = {"image_generator": _random_tree(0, shapes)}
  tx = make_optimizer(0.05, clip_norm=0.5)
  state = TrainState.create(params, {}, tx)
  oracle_tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.05, b1=0.5, b2=0.999))
  oracle_params = params["image_generator"]
  oracle_state = oracle_tx.init(oracle_params)
  step = jax.jit(lambda s, g: apply_gradients(s, g, {}))
  for seed in range(1, 4):
    grads = {"image_generator": _random_tree(seed, shapes)}
    state, skipped = step(state, grads)
    updates, oracle_state = oracle_tx.update(grads["image_generator"], oracle_state)
    oracle_params = optax.apply_updates(oracle_params, updates)
    assert int(skipped) == 0
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
      state.params["image_generator"],
      oracle_params,
    )
  # The moments are one vector over all the leaves.
  moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim == 1 and leaf.size > 1]
  assert {leaf.size for leaf in moments} == {sum(int(np.prod(s)) for s in shapes)}


def test_learning_rate_multipliers_scale_each_part_and_keep_the_state():
  """Prefix multipliers against per-part Adam oracles (optax, learning rate times the factor of the
  longest prefix); the optimizer state equals the one without multipliers, so runs resume across
  a change of them."""
  params = {
    "image_generator": {"dense_motion_network": _random_tree(0, [(3,)]), "decoder": _random_tree(1, [(4, 2)])},
    "motion_estimator": {"kp": _random_tree(2, [(5,)]), "kpx": _random_tree(3, [(2,)])},
  }  # fmt: skip
  multipliers = (
    ("image_generator", 0.2),
    ("image_generator/dense_motion_network", 1.0),
    ("motion_estimator/kp", 0.5),  # a whole name: not "kpx"
  )
  factors = {
    ("image_generator", "dense_motion_network"): 1.0,
    ("image_generator", "decoder"): 0.2,
    ("motion_estimator", "kp"): 0.5,
    ("motion_estimator", "kpx"): 1.0,
  }
  scaled = TrainState.create(params, {}, make_optimizer(0.05, multipliers=multipliers))
  plain = TrainState.create(params, {}, make_optimizer(0.05))
  oracles = {
    (a, b): (optax.adam(0.05 * f, b1=0.5, b2=0.999), params[a][b]) for (a, b), f in factors.items()
  }
  oracle_states = {k: tx.init(p) for k, (tx, p) in oracles.items()}
  step = jax.jit(lambda s, g: apply_gradients(s, g, {}))
  for seed in range(4, 7):
    grads = jax.tree.map(
      lambda p, seed=seed: jnp.asarray(
        np.random.default_rng(seed).normal(size=p.shape), jnp.float32
      ),
      params,
    )
    scaled, _ = step(scaled, grads)
    plain, _ = step(plain, grads)
    for key, (tx, _) in oracles.items():
      updates, oracle_states[key] = tx.update(grads[key[0]][key[1]], oracle_states[key])
      oracles[key] = (tx, optax.apply_updates(oracles[key][1], updates))
      jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        scaled.params[key[0]][key[1]],
        oracles[key][1],
      )
  jax.tree.map(np.testing.assert_array_equal, scaled.opt_state, plain.opt_state)
  check_prefixes(params, multipliers)  # every prefix names parameters
  with pytest.raises(ValueError, match="'motion_estimator/k' matches no parameter"):
    check_prefixes(params, (("motion_estimator/k", 0.5),))
  with pytest.raises(ValueError, match="must be positive"):
    check_prefixes(params, (("image_generator", 0.0),))


def test_update_compiles_to_few_kernels_for_many_leaves():
  """What the flat update buys: XLA fusions grow by about one per leaf (the parameter write), not
  by several (moments, bias correction, finiteness, clipping per leaf)."""
  shapes = [(i + 1, 3) for i in range(120)]
  params = {"image_generator": _random_tree(0, shapes)}
  state = TrainState.create(params, {}, make_optimizer(1e-3, clip_norm=1.0))
  compiled = jax.jit(lambda s, g: apply_gradients(s, g, {})).lower(state, params).compile()
  fusions = compiled.as_text().count(" fusion(")
  assert fusions <= 1.5 * len(shapes) + 40, fusions


def test_runs_saved_with_the_earlier_optimizer_layout_resume(tmp_path):
  """A checkpoint whose optimizer state has the earlier trained/frozen partition is restored
  onto today's states by ``train_loop.restore_states``, with the same arrays."""
  from mmfa_jax.checkpoints import TrainingCheckpoints
  from mmfa_jax.train_loop import restore_states

  params = {"image_generator": _random_tree(0, [(3, 2), (4,)])}
  state = TrainState.create(params, {}, make_optimizer(0.1))
  state, _ = apply_gradients(state, {"image_generator": _random_tree(1, [(3, 2), (4,)])}, {})
  legacy = state.replace(opt_state=legacy_opt_state(state.opt_state))
  assert jax.tree.structure(current_opt_state(legacy.opt_state)) == jax.tree.structure(
    state.opt_state
  )
  checkpoints = TrainingCheckpoints(tmp_path / "ckpt", async_save=False)
  checkpoints.save(1, legacy, legacy)
  checkpoints.wait()
  fresh = TrainState.create(params, {}, make_optimizer(0.1))
  targets = jax.eval_shape(lambda: (fresh, fresh))
  generator, discriminator = restore_states(checkpoints, 1, targets)
  for restored in (generator, discriminator):
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(state.opt_state)
    jax.tree.map(np.testing.assert_array_equal, restored.opt_state, state.opt_state)
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  checkpoints.close()
