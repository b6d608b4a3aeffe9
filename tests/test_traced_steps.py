"""The traced-step cache (``mmfa_jax.traced_steps``): a second ``CachedStep`` of the same step reads
the exported program instead of tracing, computes exactly what ``jax.jit`` of the step computes,
and anything that changes the program (identity, shapes, the package's sources) gets a new entry.
Tiered compilation: a quickly compiled program first, the optimized one from when it is ready."""

import os

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from mmfa_jax import traced_steps
from mmfa_jax.ops.convolution import conv_implementation
from mmfa_jax.sharding import batch_sharding, make_mesh, replicated
from mmfa_jax.traced_steps import CachedStep, config_identity, from_skeleton, skeleton


class State(flax.struct.PyTreeNode):
  """A train-state-like node: arrays plus a static field."""

  step: jax.Array
  params: dict
  scale: float = flax.struct.field(pytree_node=False, default=0.5)


TRACES = []  # one entry per trace of the step (the Python body runs only when traced)


def toy_step(generator, discriminator, step_inputs, batch, key):
  TRACES.append(1)
  noise = jax.random.normal(key, batch["x"].shape)
  loss = jnp.mean((batch["x"] * generator.params["w"] + step_inputs["b"] - noise) ** 2)
  grads = jax.grad(lambda w: jnp.mean((batch["x"] * w) ** 2))(generator.params["w"])
  new_generator = generator.replace(
    step=generator.step + 1, params={"w": generator.params["w"] - generator.scale * grads}
  )
  new_discriminator = discriminator.replace(step=discriminator.step + 2)
  metrics = {"loss": loss, "noise": jnp.sum(noise)}
  # Integer keys (as the image pyramids have), lists, tuples and None.
  outputs = {"pred": {16: batch["x"] * 2.0, 8: [batch["x"] + 1.0, (batch["x"], None)]}}
  return new_generator, new_discriminator, metrics, outputs


def _args(mesh):
  rep, data = replicated(mesh), batch_sharding(mesh)
  put = jax.device_put
  generator = State(put(jnp.zeros((), jnp.int32), rep), {"w": put(jnp.full((3,), 2.0), rep)})
  discriminator = State(put(jnp.zeros((), jnp.int32), rep), {"w": put(jnp.ones((2,)), rep)})
  step_inputs = {"b": put(jnp.float32(0.25), rep)}
  x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3) / 10
  batch = {"x": put(x, data)}
  return generator, discriminator, step_inputs, batch, put(jax.random.key(3), rep)


def _cached(mesh, identity="toy", quick_first=False, step_fn=toy_step):
  rep, data = replicated(mesh), batch_sharding(mesh)
  return CachedStep(
    step_fn,
    in_shardings=(rep, rep, rep, data, rep),
    out_shardings=(rep, rep, rep, data),
    identity=identity,
    quick_first=quick_first,
  )


def test_skeleton_round_trip_and_refusal():
  tree = {"a": 1.0, "d": {3: [np.ones(2), (np.zeros(1), None)], 1: np.ones(3)}}
  leaves = jax.tree.leaves(tree)
  leaves = [np.asarray(leaf) for leaf in leaves]
  described = skeleton(jax.tree.map(np.asarray, tree))
  rebuilt = from_skeleton(described, iter(leaves))
  assert jax.tree.structure(rebuilt) == jax.tree.structure(jax.tree.map(np.asarray, tree))
  np.testing.assert_array_equal(rebuilt["d"][3][0], np.ones(2))
  with pytest.raises(ValueError, match="State"):
    skeleton({"s": State(jnp.zeros(()), {})})


def test_second_step_reads_the_traced_program_and_computes_the_same(monkeypatch, tmp_path):
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", str(tmp_path))
  mesh = make_mesh(None)
  rep, data = replicated(mesh), batch_sharding(mesh)
  plain = jax.jit(toy_step, in_shardings=(rep, rep, rep, data, rep),
                  out_shardings=(rep, rep, rep, data))  # fmt: skip
  want = plain(*_args(mesh))

  TRACES.clear()
  first = _cached(mesh)
  got_first = first(*_args(mesh))
  assert not first.loaded_from_cache and len(TRACES) == 1
  files = sorted(os.listdir(tmp_path / "traced"))
  assert len(files) == 2 and files[0].endswith(".bin") and files[1].endswith(".json")

  second = _cached(mesh)
  got_second = second(*_args(mesh))
  assert second.loaded_from_cache and len(TRACES) == 1  # not traced again
  for got in (got_first, got_second):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert got[0].scale == 0.5 and got[3]["pred"][8][1][1] is None
  # The steps chain: the returned states go straight back in (they were donated).
  again = second(got_second[0], got_second[1], *_args(mesh)[2:])
  assert int(again[0].step) == 2 and int(again[1].step) == 4

  # Another identity or other shapes: new entries; a damaged file: traced again and replaced.
  _cached(mesh, identity="other")(*_args(mesh))
  assert len(os.listdir(tmp_path / "traced")) == 4
  program = tmp_path / "traced" / files[0]
  program.write_bytes(b"not a program")
  third = _cached(mesh)
  np.testing.assert_array_equal(np.asarray(third(*_args(mesh))[2]["loss"]), want[2]["loss"])
  assert not third.loaded_from_cache and program.stat().st_size > 100


def test_off_without_a_cache_and_keyed_by_the_sources(monkeypatch, tmp_path):
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", "none")
  mesh = make_mesh(None)
  step = _cached(mesh)
  step(*_args(mesh))
  assert not step.loaded_from_cache and not (tmp_path / "traced").exists()

  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", str(tmp_path))
  _cached(mesh)(*_args(mesh))
  monkeypatch.setattr(traced_steps, "source_digest", lambda: "an edited package")
  edited = _cached(mesh)
  edited(*_args(mesh))
  assert not edited.loaded_from_cache and len(os.listdir(tmp_path / "traced")) == 4


def test_keyed_by_the_convolution_implementation(monkeypatch, tmp_path):
  """MMFA_JAX_CONV is read when the step is traced: a program traced with one implementation is
  not reused under another (a run with MMFA_JAX_CONV=decomposed must not train depth taps)."""
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", str(tmp_path))
  mesh = make_mesh(None)
  monkeypatch.setenv("MMFA_JAX_CONV", "depth_taps")
  _cached(mesh)(*_args(mesh))
  same = _cached(mesh)
  same(*_args(mesh))
  assert same.loaded_from_cache
  monkeypatch.setenv("MMFA_JAX_CONV", "decomposed")
  other = _cached(mesh)
  other(*_args(mesh))
  assert not other.loaded_from_cache and len(os.listdir(tmp_path / "traced")) == 4
  with conv_implementation("native"):
    native = _cached(mesh)
    native(*_args(mesh))
  assert not native.loaded_from_cache and len(os.listdir(tmp_path / "traced")) == 6


def test_config_identity_ignores_only_the_loop_fields():
  config = synthetic.get_config("tiny")
  base = config_identity(config)
  for field, value in [("train.log_every", 7), ("train.stop_after_steps", 3),
                       ("data.worker_count", 5), ("evals.test.every_steps", 9)]:  # fmt: skip
    changed = synthetic.get_config("tiny")
    changed.update_from_flattened_dict({field: value})
    assert config_identity(changed) == base, field
  for field, value in [("train.num_steps", 21), ("optim.learning_rate", 1e-3),
                       ("loss.equivariance", 3.0), ("model.num_kp", 4)]:  # fmt: skip
    changed = synthetic.get_config("tiny")
    changed.update_from_flattened_dict({field: value})
    assert config_identity(changed) != base, field


def test_an_unwritable_cache_costs_only_the_next_run(monkeypatch, tmp_path):
  """Tracing is not repeated when the program cannot be kept: this run uses what it traced."""
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", str(tmp_path))
  (tmp_path / "traced").write_text("a file where the folder should be")
  mesh = make_mesh(None)
  TRACES.clear()
  step = _cached(mesh)
  got = step(*_args(mesh))
  assert len(TRACES) == 1 and not step.loaded_from_cache
  assert int(got[0].step) == 1 and (tmp_path / "traced").is_file()


@pytest.mark.parametrize("cache", ["none", "dir"])
def test_tiered_steps_run_the_quick_program_then_the_optimized_one(monkeypatch, tmp_path, cache):
  """Both tiers compile the same lowered step (2 XLA compilations, once each); the quick program
  (LLVM unoptimized) and the optimized one compute what ``jax.jit`` of the step computes, and the
  states chain through both (donated). A second ``CachedStep`` reads the traced step and builds
  both tiers from it."""
  from mmfa_jax.compilation_cache import CompileCounter

  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", "none" if cache == "none" else str(tmp_path))
  mesh = make_mesh(None)
  plain = jax.jit(toy_step)  # unsharded: not the same module (jax would reuse its executable)
  want = plain(*_args(mesh))
  want_again = plain(want[0], want[1], *_args(mesh)[2:])

  # A function of its own: jax reuses the executables of earlier steps of the same function.
  step = _cached(mesh, quick_first=True, step_fn=lambda *args: toy_step(*args))
  assert step.tier == "jit" and not step.optimize_in_background()  # nothing compiled yet
  assert not step.lowered.is_set()
  with CompileCounter() as compiles:
    quick = step(*_args(mesh))
    assert step.lowered.is_set()  # what waits for the lowering (compile_ahead) may start
    assert step.tier == "quick" and step.quick_compile_seconds > 0
    assert step.optimize_in_background() and not step.optimize_in_background()  # once
    step.finish_optimizing()
  assert step.tier == "optimized" and step.optimize_seconds > 0
  quick_values = jax.tree.map(lambda x: np.array(x, copy=True), quick)  # no views: donation
  optimized = step(quick[0], quick[1], *_args(mesh)[2:])
  assert any(leaf.is_deleted() for leaf in jax.tree.leaves(quick[:2]))  # donated to it
  assert compiles.compiled == 2, compiles.summary()
  for got, expected in ((quick_values, want), (optimized, want_again)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert int(optimized[0].step) == 2 and int(optimized[1].step) == 4

  if cache == "dir":  # the next run loads both tiers
    with CompileCounter() as again:
      second = _cached(mesh, quick_first=True, step_fn=lambda *args: toy_step(*args))
      second(*_args(mesh))
      second.optimize_in_background()
      second.finish_optimizing()
    # One program per tier (loaded where JAX's persistent cache, 2 s threshold in the tests, kept it).
    assert again.compiled + again.loaded == 2, again.summary()
    assert second.loaded_from_cache and second.tier == "optimized"


def test_untiered_steps_compile_through_jit():
  step = _cached(make_mesh(None))
  step(*_args(make_mesh(None)))
  assert step.tier == "jit" and not step.optimize_in_background() and step.lowered.is_set()
  step.finish_optimizing()  # nothing to wait for


def test_a_failed_first_step_still_releases_what_waits_for_its_lowering():
  def broken_step(*args):
    raise RuntimeError("a step that cannot be traced")

  step = _cached(make_mesh(None), quick_first=True, step_fn=broken_step)
  with pytest.raises(RuntimeError, match="cannot be traced"):
    step(*_args(make_mesh(None)))
  assert step.lowered.is_set()
