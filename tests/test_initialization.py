"""``initialization``: variables of every network family without compiling, against ``module.init``
(tree, shapes, dtypes, distributions) and the NumPy interpreter against JAX itself."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from mmfa_jax.compilation_cache import CompileCounter
from mmfa_jax.initialization import evaluate_on_host, init_variables
from mmfa_jax.models import (
  VGG19,
  DenseMotionNetwork,
  ExpressionDecoder,
  ExpressionEncoder,
  ExpressionVAE,
  HEEstimator,
  Hopenet,
  KPDetector,
  LatentDiscriminator,
  MultiScaleDiscriminator,
  ScaleTranslationHead,
  VGGFace,
  animation_model_from_config,
  motion_estimator_from_config,
)
from mmfa_jax.models.landmarks import LandmarkDetector
from mmfa_jax.models.motion import zero_head_pose
from mmfa_jax.ops.layers import Conv
from mmfa_jax.ops.pyramid import image_pyramid

SIZE = 64


def _image(size=SIZE):
  return np.zeros((1, size, size, 3), np.float32)


def _families():
  """(name, module, init args) for every network family at test widths."""
  model = synthetic.get_config("tiny:mmfa").model
  fv2v = synthetic.get_config("tiny:face_vid2vid").model
  image = _image()
  kp = np.zeros((1, 3, 3), np.float32)
  disc = dict(model.discriminator)
  disc["scales"] = tuple(float(s) for s in disc["scales"])
  feature = np.zeros((1, 4, 16, 16, 8), np.float32)
  poses = (zero_head_pose(1), zero_head_pose(1))  # the frozen Hopenet's head poses: inputs
  return [
    ("kp_detector", KPDetector(**dict(model.kp_detector), num_kp=3), (image,)),
    ("he_estimator", HEEstimator(**dict(fv2v.he_estimator), num_kp=3), (image,)),
    ("hopenet", Hopenet(**dict(model.hopenet)), (image,)),
    ("scale_translation", ScaleTranslationHead(**dict(model.scale_translation)), (image,)),
    ("expression_encoder", ExpressionEncoder(**dict(model.expression_encoder)), (image,)),
    (
      "expression_decoder",
      ExpressionDecoder(**dict(model.expression_decoder)),
      (np.zeros((1, 12), np.float32), kp),
    ),
    ("dense_motion", DenseMotionNetwork(**dict(model.dense_motion)), (feature, kp, kp)),
    ("motion_mmfa", motion_estimator_from_config(model), (image, image, False, poses)),
    ("motion_face_vid2vid", motion_estimator_from_config(fv2v), (image, image)),
    ("animation_mmfa", animation_model_from_config(model), (image, image, False, poses)),
    ("animation_face_vid2vid", animation_model_from_config(fv2v), (image, image)),
    (
      "discriminator",
      MultiScaleDiscriminator(**disc),
      (image_pyramid(jnp.asarray(image), disc["scales"]),),
    ),
    ("landmarks", LandmarkDetector(**_detector_settings()), (image,)),
    ("vgg19", VGG19(), (image,)),
    ("vggface", VGGFace(), (image,)),
    (
      "expression_vae",
      ExpressionVAE(**dict(model.expression_vae)),
      (np.zeros((2, 12), np.float32), jax.random.key(3)),
    ),
    (
      "latent_discriminator",
      LatentDiscriminator(hidden=(16, 16)),
      (np.zeros((2, 12), np.float32),),
    ),
  ]


def _detector_settings():
  settings = dict(synthetic.get_config("tiny").model.landmarks)
  return dict(settings, num_points=len(settings.pop("point_weights")), max_features=16)


FAMILIES = _families()


@pytest.mark.parametrize("name,module,args", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_tree_shapes_and_dtypes_equal_module_init_and_nothing_compiles(name, module, args):
  template = jax.eval_shape(lambda key: module.init(key, *args), jax.random.key(0))
  with CompileCounter() as compiles:
    variables = init_variables(module, 0, *args)
  assert compiles.compiled == 0, f"{name}: init_variables compiled {compiles.compiled} programs"
  assert jax.tree.structure(variables) == jax.tree.structure(template)
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(template), strict=True):
    assert isinstance(got, np.ndarray)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.all(np.isfinite(got))


def test_compile_counter_sees_a_compilation():
  """The counter above is live: a fresh jit compiles once."""
  with CompileCounter() as compiles:
    jax.jit(lambda x: x * 3 + 1)(np.arange(5, dtype=np.float32))
  assert compiles.compiled == 1 and compiles.compile_seconds > 0


def test_deterministic_for_a_seed_and_different_across_seeds():
  module = Conv(16, (3, 3), padding=1)
  x = np.zeros((1, 8, 8, 4), np.float32)
  first, again, other = (init_variables(module, s, x) for s in (5, 5, 6))
  np.testing.assert_array_equal(first["params"]["kernel"], again["params"]["kernel"])
  assert not np.allclose(first["params"]["kernel"], other["params"]["kernel"])
  # A key works as well as a seed, and another key gives other values.
  keyed = init_variables(module, jax.random.key(5), x)
  assert keyed["params"]["kernel"].shape == (3, 3, 4, 16)
  assert not np.allclose(keyed["params"]["kernel"], first["params"]["kernel"])


def test_torch_default_initialisation_distribution():
  """Conv weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (hand-computed moments)."""
  module = Conv(64, (3, 3, 3), padding=1)
  variables = init_variables(module, 0, np.zeros((1, 4, 4, 4, 32), np.float32))
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  bound = 1 / math.sqrt(27 * 32)
  assert kernel.shape == (3, 3, 3, 32, 64)
  assert np.max(np.abs(kernel)) <= bound and np.max(np.abs(bias)) <= bound
  n = kernel.size  # 55,296 draws: std of the mean bound/sqrt(3n), of the std about bound/sqrt(5n)
  assert abs(kernel.mean()) < 4 * bound / math.sqrt(3 * n)
  assert abs(kernel.std() - bound / math.sqrt(3)) < 0.02 * bound
  # Uniform: each tenth of the range holds a tenth of the draws.
  counts, _ = np.histogram(kernel, bins=10, range=(-bound, bound))
  np.testing.assert_allclose(counts / n, 0.1, atol=0.01)


@pytest.mark.parametrize("name", ["discriminator", "expression_decoder", "dense_motion"])
def test_values_follow_module_init_leaf_by_leaf(name):
  """Against ``jax.jit(module.init)`` (every initialiser the networks use: PyTorch-default conv
  and linear weights and biases, zero-initialised outputs, BatchNorm, spectral-norm vectors):
  deterministic leaves (zeros, ones, constants) equal, random ones with the same range and spread."""
  _, module, args = next(f for f in FAMILIES if f[0] == name)
  init = jax.jit(lambda key: module.init(key, *args))
  reference = init(jax.random.key(0, impl="unsafe_rbg"))  # RBG: quick to compile
  reference_other_key = init(jax.random.key(1, impl="unsafe_rbg"))
  ours = init_variables(module, 0, *args)
  paths = jax.tree_util.tree_leaves_with_path(reference)
  random_leaves = 0
  for (path, want), want_other, got in zip(
    paths, jax.tree.leaves(reference_other_key), jax.tree.leaves(ours), strict=True
  ):
    name = jax.tree_util.keystr(path)
    want, want_other = np.asarray(want), np.asarray(want_other)
    if np.array_equal(want, want_other):  # not random
      np.testing.assert_array_equal(got, want, err_msg=name)
      continue
    random_leaves += 1
    if path[-1].key in ("u", "v"):  # spectral-norm vectors: random unit vectors
      np.testing.assert_allclose(np.linalg.norm(got), 1.0, rtol=1e-5, err_msg=name)
      assert got.size == 1 or not np.allclose(np.abs(got), np.abs(got).mean()), name
      continue
    # Uniform initialisers: the bound is about the largest of the 2n reference draws (each of the
    # two is within b (1 - 4/n) of it with probability 1 - e^-8).
    bound = max(np.max(np.abs(want)), np.max(np.abs(want_other))) * (1 + 4 / want.size)
    assert np.max(np.abs(got)) <= bound, name
    if want.size >= 2000:
      np.testing.assert_allclose(got.std(), want.std(), rtol=0.1, err_msg=name)
  assert random_leaves >= 2


# --------------------------------------------------------------------------------------------
# The interpreter against JAX


def test_arithmetic_matches_jax():
  def fn(x, n):
    y = jnp.where(x > 0.2, jnp.sqrt(jnp.abs(x)), -x) * 3.0 - 1.5
    z = jnp.concatenate([y[:, :2], jnp.exp(y[:, 2:]) / 4.0], axis=1).T
    counts = (n // 3, n % 3, (-n) // 3, jax.lax.shift_right_logical(n, 2), n << 1, n | 5)
    ramp = jax.lax.broadcasted_iota(jnp.int32, (3, 4), 1).astype(jnp.float32)
    return dict(
      z=z,
      total=jnp.sum(z, axis=0),
      peak=jnp.max(z),
      counts=counts,
      erfinv=jax.scipy.special.erfinv(jnp.clip(x, -0.9, 0.9)),
      ramp=ramp.reshape(4, 3),
      bits=jax.lax.bitcast_convert_type(x, jnp.uint32) >> 9,
    )

  x = np.random.default_rng(0).uniform(-1, 1, (3, 5)).astype(np.float32)
  n = np.array([7, -7, 12, -1], np.int32)
  got, want = evaluate_on_host(fn, x, n), jax.jit(fn)(x, n)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    assert g.dtype == w.dtype, jax.tree_util.keystr(path)
    np.testing.assert_allclose(g, np.asarray(w), rtol=2e-6, atol=1e-6)


def test_unknown_primitives_are_evaluated_by_jax():
  """``cumsum`` and ``dot_general`` are not in the NumPy table: JAX computes them (correctly)."""

  def fn(x):
    return jnp.cumsum(x, axis=1) @ x.T

  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  np.testing.assert_allclose(evaluate_on_host(fn, x), np.cumsum(x, axis=1) @ x.T)


def test_random_draws_have_the_right_distributions():
  def draws(key):
    a, b, c = jax.random.split(key, 3)
    return (
      jax.random.uniform(a, (200_000,), minval=-2.0, maxval=3.0),
      jax.random.normal(b, (200_000,)),
      jax.random.truncated_normal(c, -1.0, 1.0, (200_000,)),
      jax.random.split(c, (2, 2)),
    )

  uniform, normal, truncated, keys = evaluate_on_host(draws, jax.random.key(0))
  assert uniform.min() >= -2.0 and uniform.max() < 3.0
  np.testing.assert_allclose([uniform.mean(), uniform.var()], [0.5, 25 / 12], atol=0.02)
  np.testing.assert_allclose([normal.mean(), normal.std()], [0.0, 1.0], atol=0.01)
  assert np.abs(truncated).max() <= 1.0
  # Variance of N(0, 1) truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1).
  phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
  np.testing.assert_allclose(truncated.var(), 1 - 2 * phi / math.erf(1 / math.sqrt(2)), atol=0.01)
  # Keys come back as JAX keys, all different.
  assert keys.shape == (2, 2) and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
  data = np.asarray(jax.random.key_data(keys)).reshape(4, -1)
  assert len({tuple(row) for row in data}) == 4
