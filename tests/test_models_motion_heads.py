"""Hopenet, MMFA's heads, the dense motion network and the composed motion against torch twins."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_oracles import rotation_matrix_t, to_channels_first

from mmfa_jax.models import (
  DenseMotionNetwork,
  ExpressionDecoder,
  ExpressionEncoder,
  Hopenet,
  ScaleTranslationHead,
  prepare_hopenet_input,
)
from mmfa_jax.models.he_estimator import HETrunk
from mmfa_jax.models.hopenet import hopenet_head_pose
from mmfa_jax.models.motion import zero_head_pose
from mmfa_jax.models.variants import VARIANTS
from pretrained_converters import he_estimator as he_converter
from pretrained_converters import hopenet as hopenet_converter
from pretrained_converters import keypoint_detector as kp_converter
from pretrained_converters import motion as motion_converter
from pretrained_converters import torch_reference as torch_twins

torch.manual_seed(0)

SMALL_HOPENET = dict(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64))
SMALL_TRUNK = dict(block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1))
SMALL_ENCODER = dict(stem_features=8, widths=(16, 32), latent_dim=12)
SMALL_KP = dict(
  num_kp=5, block_expansion=8, max_features=64, num_blocks=3, reshape_channels=128, reshape_depth=4
)


def _state(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _images(shape, seed=0):
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _close(got, want, atol=1e-4, rtol=1e-4):
  want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
  np.testing.assert_allclose(np.asarray(got), want, atol=atol, rtol=rtol)


def _template(module, *args):
  return jax.eval_shape(lambda key: module.init(key, *args), jax.random.key(0))


def test_hopenet_input_preparation_matches_torch():
  images = _images((2, 256, 256, 3))
  want = torch_twins.hopenet_input(to_channels_first(images)).permute(0, 2, 3, 1)
  _close(prepare_hopenet_input(images), want, atol=1e-5)


def test_hopenet_matches_twin():
  twin = torch_twins.randomize_batchnorm(torch_twins.Hopenet(**SMALL_HOPENET)).eval()
  prepared = np.asarray(prepare_hopenet_input(_images((2, 64, 64, 3))))
  model = Hopenet(**SMALL_HOPENET)
  variables = hopenet_converter.convert(_state(twin), _template(model, prepared))
  got = model.apply(variables, prepared)
  with torch.no_grad():
    yaw, pitch, roll = twin(to_channels_first(prepared))
  _close(got["yaw"], yaw)
  _close(got["pitch"], pitch)
  _close(got["roll"], roll)


@pytest.mark.parametrize(
  ("translation", "scale"), [("pooled", "pooled"), ("heatmap", "pooled"), ("pooled", "heatmap")]
)
def test_scale_translation_head_matches_twin(translation, scale):
  options = dict(SMALL_TRUNK, translation=translation, scale=scale)
  torch.manual_seed(0)  # the same twin whatever ran before
  twin = torch_twins.randomize_batchnorm(torch_twins.ScaleTranslationHead(**options)).eval()
  # Maps that vary enough for the softmax to be far from uniform.
  if translation == "heatmap":
    torch.nn.init.normal_(twin.translation_map.weight, std=10.0)
  if scale == "heatmap":
    torch.nn.init.normal_(twin.scale_map.weight, std=10.0)
  images = _images((2, 64, 64, 3), seed=1)
  model = ScaleTranslationHead(**options)
  variables = motion_converter.convert_scale_translation(_state(twin), _template(model, images))
  got = model.apply(variables, images)
  with torch.no_grad():
    want = twin(to_channels_first(images))
    pooled_only = twin.fc_t(twin.trunk(to_channels_first(images)))
  _close(got["scale"], want["scale"])
  _close(got["translation"], want["translation"])
  if translation == "heatmap":  # the map moved x and y (not z) by a visible amount
    moved = np.abs(np.asarray(got["translation"]) - pooled_only.numpy())
    assert moved[:, :2].max() > 0.05 and moved[:, 2].max() < 1e-5
  if scale == "heatmap":  # the map changed the scale by a visible factor
    pooled_scale = torch.exp(twin.fc_scale(twin.trunk(to_channels_first(images)))[:, 0])
    assert np.abs(np.log(np.asarray(got["scale"]) / pooled_scale.detach().numpy())).max() > 0.05
  # Freshly initialised, the scale is 1 (exactly with the pooled head) and the translation 0.
  fresh = model.init(jax.random.key(0), images)
  out = model.apply(fresh, images)
  np.testing.assert_allclose(
    out["scale"], np.ones(2), rtol=0, atol=0 if scale == "pooled" else 1e-6
  )
  np.testing.assert_allclose(out["translation"], np.zeros((2, 3)), atol=1e-7)


def test_scale_translation_heatmap_follows_the_content():
  """A hand-set map (the first channel of stage 0) on a bright square: the head's x and y are the
  expectation of make_coordinate_grid under the softmax, computed here with NumPy."""
  model = ScaleTranslationHead(**SMALL_TRUNK, translation="heatmap", heatmap_stage=0)
  image = np.zeros((1, 64, 64, 3), np.float32)
  image[:, 8:24, 36:52] = 1.0  # right of centre, above it
  variables = jax.tree.map(np.asarray, model.init(jax.random.key(1), image))
  kernel = np.zeros_like(variables["params"]["translation_map"]["kernel"])  # (16, 1)
  kernel[0, 0] = 4.0
  variables["params"]["translation_map"]["kernel"] = kernel
  translation = model.apply(variables, image)["translation"]
  trunk = {name: tree["trunk"] for name, tree in variables.items()}
  _, stage_map = HETrunk(8, (16, 32, 64, 128), (1, 1, 1, 1)).apply(trunk, image, False, 0)
  logits = 4.0 * np.asarray(stage_map)[0, :, :, 0]  # (16, 16)
  weights = np.exp(logits - logits.max())
  weights /= weights.sum()
  axis = np.linspace(-1, 1, 16)
  np.testing.assert_allclose(
    np.asarray(translation)[0, :2],
    [(weights.sum(0) * axis).sum(), (weights.sum(1) * axis).sum()],
    atol=1e-5,
  )


def test_scale_heatmap_follows_the_size():
  """A hand-set scale map (the stage-0 channel brightest inside the square) on a bright square of
  side 12 and of side 24: the scale is the spread of make_coordinate_grid under the map's softmax
  over a uniform map's (NumPy here), and the larger square gets the larger scale."""
  model = ScaleTranslationHead(**SMALL_TRUNK, scale="heatmap", heatmap_stage=0)
  images = np.zeros((2, 64, 64, 3), np.float32)
  images[0, 26:38, 26:38] = 1.0
  images[1, 20:44, 20:44] = 1.0
  variables = jax.tree.map(np.asarray, model.init(jax.random.key(1), images))
  trunk = {name: tree["trunk"] for name, tree in variables.items()}
  _, stage_map = HETrunk(8, (16, 32, 64, 128), (1, 1, 1, 1)).apply(trunk, images, False, 0)
  stage_map = np.asarray(stage_map, np.float64)  # (2, 16, 16, 16)
  inside = stage_map[1, 6:10, 6:10].mean((0, 1)) - stage_map[1, :2, :2].mean((0, 1))  # (16,)
  channel = int(np.argmax(inside))
  kernel = np.zeros_like(variables["params"]["scale_map"]["kernel"])  # (16, 1)
  kernel[channel, 0] = 40.0  # a sharp map: the bright square stands 0.1-0.3 above the rest
  variables["params"]["scale_map"]["kernel"] = kernel
  scale = np.asarray(model.apply(variables, images)["scale"])
  axis = np.linspace(-1, 1, 16)
  want = []
  for logits in 40.0 * stage_map[..., channel]:  # (16, 16) each
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    variances = [
      (w * axis**2).sum() - (w * axis).sum() ** 2 for w in (weights.sum(0), weights.sum(1))
    ]
    want.append(np.sqrt(np.mean(variances) / axis.var()))
  np.testing.assert_allclose(scale, want, rtol=1e-4)
  assert scale[1] > 1.2 * scale[0]


def test_expression_encoder_matches_twin():
  twin = torch_twins.randomize_batchnorm(
    torch_twins.ExpressionEncoder(8, (16, 32), latent_dim=12, map_size=2), seed=2
  ).eval()
  images = _images((2, 128, 128, 3), seed=2)  # 2 x 2 final map: flatten order matters
  model = ExpressionEncoder(**SMALL_ENCODER)
  variables = motion_converter.convert_by_name(_state(twin), _template(model, images), "encoder")
  with torch.no_grad():
    want = twin(to_channels_first(images))
  _close(model.apply(variables, images), want)


def test_expression_decoder_matches_twin_in_both_modes():
  twin = torch_twins.randomize_batchnorm(
    torch_twins.ExpressionDecoder(latent_dim=12, num_kp=5, hidden=(16, 16)), seed=3
  )
  torch.nn.init.normal_(twin.fc_out.weight)
  rng = np.random.default_rng(3)
  latent = rng.normal(size=(4, 12)).astype(np.float32)
  canonical = rng.uniform(-1, 1, (4, 5, 3)).astype(np.float32)
  model = ExpressionDecoder(hidden=(16, 16))
  variables = motion_converter.convert_by_name(
    _state(twin), _template(model, latent, canonical), "decoder"
  )
  with torch.no_grad():
    want_eval = twin.eval()(torch.from_numpy(latent), torch.from_numpy(canonical))
    want_train = twin.train()(torch.from_numpy(latent), torch.from_numpy(canonical))
  _close(model.apply(variables, latent, canonical), want_eval)
  got_train, _ = model.apply(variables, latent, canonical, True, mutable=["batch_stats"])
  _close(got_train, want_train)
  # Zero-initialised output layer: a fresh decoder predicts no deformation.
  fresh = model.init(jax.random.key(1), latent, canonical)
  np.testing.assert_array_equal(model.apply(fresh, latent, canonical), np.zeros((4, 5, 3)))


def _dense_motion_case(seed, batch, num_kp, feature_channels, spatial):
  rng = np.random.default_rng(seed)
  feature = rng.normal(size=(batch, *spatial, feature_channels)).astype(np.float32)
  kp_source = rng.uniform(-0.9, 0.9, (batch, num_kp, 3)).astype(np.float32)
  kp_driving = (kp_source + rng.normal(0, 0.1, kp_source.shape)).astype(np.float32)
  return feature, kp_source, kp_driving


def check_dense_motion(config, twin_config, feature, kp_source, kp_driving, atol):
  twin = torch_twins.randomize_batchnorm(
    torch_twins.DenseMotionNetwork(**twin_config), seed=4
  ).eval()
  model = DenseMotionNetwork(**config)
  template = _template(model, feature, kp_source, kp_driving)
  variables = motion_converter.convert_by_name(_state(twin), template, "dense_motion")
  got = jax.jit(model.apply)(variables, feature, kp_source, kp_driving)
  with torch.no_grad():
    want = twin(
      to_channels_first(feature), torch.from_numpy(kp_driving), torch.from_numpy(kp_source)
    )
  _close(got["sparse_motion"], want["sparse_motion"], atol=1e-6)
  _close(got["mask"], want["mask"].permute(0, 2, 3, 4, 1), atol=atol)
  _close(got["deformation"], want["deformation"], atol=atol)
  _close(got["occlusion_map"], want["occlusion_map"].permute(0, 2, 3, 1), atol=atol)
  return got


def test_dense_motion_matches_twin():
  feature, kp_source, kp_driving = _dense_motion_case(4, 2, 3, 6, (4, 16, 16))
  config = dict(block_expansion=8, num_blocks=2, max_features=32, compress=4)
  twin_config = dict(
    block_expansion=8, num_blocks=2, max_features=32, num_kp=3, feature_channel=6, reshape_depth=4
  )
  got = check_dense_motion(config, twin_config, feature, kp_source, kp_driving, atol=1e-5)
  assert got["deformed_feature"].shape == (2, 4, 4, 16, 16, 4)
  assert got["heatmap"].shape == (2, 4, 16, 16, 4)
  assert float(np.asarray(got["mask"]).std()) > 1e-3  # the mask is not uniform


def test_mask_logit_scale_multiplies_the_mask_logits():
  """mask_logit_scale=a gives softmax(a * logits): the scale-1 mask's log, times a, renormalised;
  the deformation is the grid plus that mask's weighted slot shifts."""
  feature, kp_source, kp_driving = _dense_motion_case(5, 2, 3, 6, (4, 8, 8))
  config = dict(block_expansion=8, num_blocks=2, max_features=32, compress=4)
  variables = DenseMotionNetwork(**config).init(jax.random.key(0), feature, kp_source, kp_driving)
  reference = DenseMotionNetwork(**config).apply(variables, feature, kp_source, kp_driving)
  scaled = DenseMotionNetwork(**config, mask_logit_scale=0.05).apply(
    variables, feature, kp_source, kp_driving
  )
  logits = np.log(np.asarray(reference["mask"], np.float64))
  want = np.exp(0.05 * logits)
  want /= want.sum(-1, keepdims=True)
  np.testing.assert_allclose(scaled["mask"], want, atol=1e-6)
  # The scaled mask is nearer uniform (1 / (K + 1)) than the reference's.
  uniform = 1 / 4
  assert np.abs(want - uniform).max() < np.abs(np.asarray(reference["mask"]) - uniform).max()
  motion = np.asarray(reference["sparse_motion"])  # (B, K+1, D, H, W, 3); slot 0 the identity
  shifts = motion - motion[:, :1]  # each slot's shift from the identity grid
  want_deformation = motion[:, 0] + np.einsum("bdhwk,bkdhwc->bdhwc", want, shifts)
  np.testing.assert_allclose(scaled["deformation"], want_deformation, atol=1e-5)
  np.testing.assert_array_equal(scaled["occlusion_map"], reference["occlusion_map"])


def _motion_twins(seed):
  twins = {
    "kp": torch_twins.KPDetector(
      block_expansion=8,
      num_kp=5,
      max_features=64,
      reshape_channel=128,
      reshape_depth=4,
      num_blocks=3,
    ),
    "pose": torch_twins.Hopenet(**SMALL_HOPENET),
    "scale_translation_head": torch_twins.ScaleTranslationHead(**SMALL_TRUNK),
    "exp_encoder": torch_twins.ExpressionEncoder(8, (16, 32), latent_dim=12, map_size=1),
    "exp_decoder": torch_twins.ExpressionDecoder(latent_dim=12, num_kp=5, hidden=(16,)),
    "he": torch_twins.HEEstimator(**SMALL_TRUNK, num_kp=5),
  }
  for i, twin in enumerate(twins.values()):
    torch_twins.randomize_batchnorm(twin, seed=seed + i).eval()
  torch.nn.init.normal_(twins["exp_decoder"].fc_out.weight, std=0.1)
  return twins


def _motion_estimator(variant, twins, images):
  """(model, its converted variables, head_poses(source, driving)): MMFA's rotation comes from the
  converted twin Hopenet, an input of the motion estimator."""
  model = VARIANTS[variant]().motion_estimator(
    dict(
      kp_detector=SMALL_KP,
      he_estimator=dict(SMALL_TRUNK, num_kp=5),
      hopenet=SMALL_HOPENET,
      scale_translation=SMALL_TRUNK,
      expression_encoder=SMALL_ENCODER,
      expression_decoder=dict(hidden=(16,)),
    )
  )
  pose = zero_head_pose(images.shape[0])
  template = _template(model, images, images, False, (pose, pose))
  converters = {
    "kp": kp_converter.convert,
    "pose": hopenet_converter.convert,
    "scale_translation_head": motion_converter.convert_scale_translation,
    "exp_encoder": lambda s, t: motion_converter.convert_by_name(s, t, "exp_encoder"),
    "exp_decoder": lambda s, t: motion_converter.convert_by_name(s, t, "exp_decoder"),
    "he": he_converter.convert,
  }
  parts = {}
  for name in template["params"]:
    sub_template = {c: template[c][name] for c in template if name in template[c]}
    parts[name] = converters[name](_state(twins[name]), sub_template)
  hopenet = Hopenet(**SMALL_HOPENET)
  hopenet_variables = converters["pose"](_state(twins["pose"]), _template(hopenet, images))

  def head_poses(source, driving):
    return tuple(hopenet_head_pose(hopenet, hopenet_variables, x) for x in (source, driving))

  return model, motion_converter.assemble(parts), head_poses


def _torch_angles(logits):
  return (torch.softmax(logits, -1) * torch.arange(66.0)).sum(-1) * 3 - 99


def test_motion_estimator_mmfa_matches_twin_composition():
  twins = _motion_twins(seed=10)
  source, driving = _images((2, 64, 64, 3), 5), _images((2, 64, 64, 3), 6)
  model, variables, head_poses = _motion_estimator("mmfa", twins, source)
  got = jax.jit(model.apply)(variables, source, driving, head_poses=head_poses(source, driving))
  with torch.no_grad():
    canonical = twins["kp"](to_channels_first(source))["value"]
    for name, image in (("source", source), ("driving", driving)):
      x = to_channels_first(image)
      yaw, pitch, roll = (_torch_angles(v) for v in twins["pose"](torch_twins.hopenet_input(x)))
      rotation = rotation_matrix_t(yaw, pitch, roll, math.pi)
      head = twins["scale_translation_head"](x)
      latent = twins["exp_encoder"](x)
      deformation = twins["exp_decoder"](latent, canonical)
      kp = head["scale"][:, None, None] * torch.einsum(
        "bij,bkj->bki", rotation, canonical + deformation
      )
      kp = kp + head["translation"][:, None]
      motion = got[name]
      _close(motion["yaw"], yaw, atol=1e-3)
      _close(motion["rotation"], rotation, atol=1e-5)
      _close(motion["scale"], head["scale"])
      _close(motion["expression_latent"], latent)
      _close(motion["expression_deformation"], deformation)
      _close(motion["kp"], kp)
  _close(got["source"]["canonical_kp"], canonical, atol=1e-5)


def test_motion_estimator_face_vid2vid_matches_twin_composition():
  twins = _motion_twins(seed=20)
  source, driving = _images((2, 64, 64, 3), 7), _images((2, 64, 64, 3), 8)
  model, variables, _ = _motion_estimator("face_vid2vid", twins, source)
  got = jax.jit(model.apply)(variables, source, driving)
  with torch.no_grad():
    canonical = twins["kp"](to_channels_first(source))["value"]
    for name, image in (("source", source), ("driving", driving)):
      he = twins["he"](to_channels_first(image))
      yaw, pitch, roll = (_torch_angles(he[k]) for k in ("yaw", "pitch", "roll"))
      rotation = rotation_matrix_t(yaw, pitch, roll, 3.14)
      kp = (
        torch.einsum("bij,bkj->bki", rotation, canonical)
        + he["t"][:, None]
        + he["exp"].view(2, 5, 3)
      )
      _close(got[name]["roll"], roll, atol=1e-3)
      _close(got[name]["kp"], kp)
  np.testing.assert_array_equal(got["driving"]["scale"], np.ones(2))


def test_frozen_head_pose_is_an_input_and_gets_no_gradient():
  twins = _motion_twins(seed=30)
  source = _images((1, 64, 64, 3), 9)
  model, variables, head_poses = _motion_estimator("mmfa", twins, source)
  assert "pose" not in variables["params"]  # the frozen Hopenet is never a trained parameter
  poses = head_poses(source, source)

  def loss(params, poses):
    out = model.apply({**variables, "params": params}, source, source, False, poses)
    return jnp.sum(out["driving"]["kp"] ** 2)

  grads, pose_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], poses)
  pose_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(pose_grads))
  kp_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["kp"]))
  assert pose_norm == 0.0 and kp_norm > 0.0
  with pytest.raises(ValueError, match="pass head_pose"):
    model.apply(variables, source, source)
