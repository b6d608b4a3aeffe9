"""vox-256 shapes (chex) and parameter counts of every motion-side network, and bfloat16 compute."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from configs import vox
from mmfa_jax.initialization import init_variables
from mmfa_jax.models import DenseMotionNetwork, KPDetector, motion_estimator_from_config
from mmfa_jax.models.motion import zero_head_pose
from mmfa_jax.models.summary import REFERENCE_PARAM_COUNTS, summarise_networks


def test_vox256_param_counts_and_shapes():
  summary = summarise_networks(vox.get_config(), batch=2)
  for name, count in REFERENCE_PARAM_COUNTS.items():
    assert summary[name]["params"] == count, name
  shapes = {name: info["outputs"] for name, info in summary.items()}
  chex.assert_equal(shapes["kp_detector"], {"value": (2, 15, 3), "heatmap": (2, 16, 64, 64, 15)})
  chex.assert_equal(shapes["he_estimator"]["exp"], (2, 45))
  for angle in ("yaw", "pitch", "roll"):
    chex.assert_equal(shapes["he_estimator"][angle], (2, 66))
    chex.assert_equal(shapes["hopenet"][angle], (2, 66))
  chex.assert_equal(shapes["scale_translation"], {"scale": (2,), "translation": (2, 3)})
  chex.assert_equal(shapes["expression_encoder"], (2, 128))
  chex.assert_equal(shapes["expression_decoder"], (2, 15, 3))
  dense = shapes["dense_motion"]
  chex.assert_equal(dense["deformation"], (2, 16, 64, 64, 3))
  chex.assert_equal(dense["mask"], (2, 16, 64, 64, 16))
  chex.assert_equal(dense["occlusion_map"], (2, 64, 64, 1))
  chex.assert_equal(dense["sparse_motion"], (2, 16, 16, 64, 64, 3))
  for kind in ("original", "spade", "multiscale"):
    chex.assert_equal(shapes[f"{kind}_generator"]["prediction"], (2, 256, 256, 3))
  chex.assert_equal(
    shapes["multiscale_generator"]["predictions"],
    {64: (2, 64, 64, 3), 128: (2, 128, 128, 3), 256: (2, 256, 256, 3)},
  )
  features, prediction = shapes["discriminator"][1.0]
  chex.assert_equal(
    features, [(2, 126, 126, 64), (2, 61, 61, 128), (2, 29, 29, 256), (2, 26, 26, 512)]
  )
  chex.assert_equal(prediction, (2, 26, 26, 1))
  for net in ("vgg19", "vggface"):
    chex.assert_equal([s[-1] for s in shapes[net]], [64, 128, 256, 512, 512])
  chex.assert_equal(shapes["expression_vae"]["reconstruction"], (2, 128))


def test_motion_estimator_shapes_at_vox256():
  config = vox.get_config()
  image = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  poses = (zero_head_pose(2), zero_head_pose(2))  # MMFA's frozen Hopenet head pose: an input
  for variant in ("mmfa", "face_vid2vid"):
    model_config = config.model.copy_and_resolve_references()
    model_config.variant = variant
    model = motion_estimator_from_config(model_config)

    def run(key, source, driving, model=model):
      variables = model.init(key, source, driving, False, poses)
      return model.apply(variables, source, driving, False, poses)

    out = jax.eval_shape(run, jax.random.key(0), image, image)
    for frame in ("source", "driving"):
      motion = out[frame]
      chex.assert_shape(motion["kp"], (2, 15, 3))
      chex.assert_shape(motion["rotation"], (2, 3, 3))
      chex.assert_shape([motion["yaw"], motion["pitch"], motion["roll"], motion["scale"]], (2,))
      chex.assert_shape(motion["translation"], (2, 3))
      chex.assert_shape(motion["expression_deformation"], (2, 15, 3))
    chex.assert_shape(out["source"]["canonical_kp"], (2, 15, 3))
    if variant == "mmfa":
      chex.assert_shape(out["driving"]["expression_latent"], (2, 128))


def test_bfloat16_compute_stays_close_to_float32():
  """bfloat16 activations, float32 parameters. Measured on these random-init networks: keypoints
  7e-5, deformation 1.1e-5, occlusion 1.6e-4 max abs difference to float32; asserted below 1e-3."""
  rng = np.random.default_rng(0)
  images = rng.random((2, 64, 64, 3), dtype=np.float32)
  config = dict(
    num_kp=5,
    block_expansion=8,
    max_features=64,
    num_blocks=3,
    reshape_channels=128,
    reshape_depth=4,
  )
  variables = init_variables(KPDetector(**config), 0, images)
  assert jax.tree.leaves(variables)[0].dtype == jnp.float32
  full = jax.jit(KPDetector(**config).apply)(variables, images)["value"]
  half = jax.jit(KPDetector(**config, dtype=jnp.bfloat16).apply)(variables, images)["value"]
  assert half.dtype == jnp.float32  # keypoints are returned in float32
  np.testing.assert_allclose(half, full, atol=1e-3)

  feature = rng.normal(size=(1, 4, 16, 16, 6)).astype(np.float32)
  kp_source = rng.uniform(-0.8, 0.8, (1, 3, 3)).astype(np.float32)
  kp_driving = (kp_source + 0.1).astype(np.float32)
  dense_config = dict(block_expansion=8, num_blocks=2, max_features=32)
  variables = init_variables(DenseMotionNetwork(**dense_config), 1, feature, kp_source, kp_driving)
  full = jax.jit(DenseMotionNetwork(**dense_config).apply)(
    variables, feature, kp_source, kp_driving
  )
  half = jax.jit(DenseMotionNetwork(**dense_config, dtype=jnp.bfloat16).apply)(
    variables, feature, kp_source, kp_driving
  )
  np.testing.assert_allclose(half["deformation"], full["deformation"], atol=1e-3)
  np.testing.assert_allclose(half["occlusion_map"], full["occlusion_map"], atol=1e-3)
