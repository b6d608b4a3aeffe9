"""Synthesis-side networks against PyTorch twins (spectral norm included) and the whole model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_helpers import random_variables
from torch_oracles import rotation_matrix_t, to_channels_first

from mmfa_jax.models import (
  VGG19,
  AnimationModel,
  ExpressionVAE,
  LatentDiscriminator,
  MultiScaleDiscriminator,
  MultiScaleGenerator,
  OcclusionAwareGenerator,
  SPADEGenerator,
  VGGFace,
)
from pretrained_converters import he_estimator as he_converter
from pretrained_converters import keypoint_detector as kp_converter
from pretrained_converters import motion as motion_converter
from pretrained_converters import synthesis
from pretrained_converters import torch_reference as torch_twins

torch.manual_seed(0)

DENSE = dict(block_expansion=8, num_blocks=2, max_features=32)
GEN = dict(
  block_expansion=8,
  max_features=32,
  num_down_blocks=2,
  reshape_channels=8,
  reshape_depth=4,
  num_resblocks=2,
)
TWIN_GEN = dict(
  block_expansion=8,
  max_features=32,
  num_down_blocks=2,
  reshape_channel=8,
  reshape_depth=4,
  num_kp=3,
  dense_motion=DENSE,
)


def _state(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _close(got, want, atol=1e-4, rtol=1e-4):
  want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
  np.testing.assert_allclose(np.asarray(got), want, atol=atol, rtol=rtol)


def _template(module, *args):
  return jax.eval_shape(lambda key, *a: module.init(key, *a), jax.random.key(0), *args)


def _case(seed, batch=2, size=64, num_kp=3):
  rng = np.random.default_rng(seed)
  source = rng.random((batch, size, size, 3), dtype=np.float32)
  kp_source = rng.uniform(-0.8, 0.8, (batch, num_kp, 3)).astype(np.float32)
  kp_driving = (kp_source + rng.normal(0, 0.1, kp_source.shape)).astype(np.float32)
  return source, kp_source, kp_driving


def _prepare(twin, *inputs, seed=0):
  """Settle spectral norms by power iteration, randomise BatchNorms, switch to eval."""
  torch_twins.settle_spectral_norm(twin, *inputs)
  return torch_twins.randomize_batchnorm(twin, seed=seed).eval()


@pytest.mark.parametrize(
  ("twin_cls", "model_cls", "extra"),
  [
    (torch_twins.OcclusionAwareGenerator, OcclusionAwareGenerator, {}),
    (torch_twins.SPADEGenerator, SPADEGenerator, {}),
    (torch_twins.MultiScaleGenerator, MultiScaleGenerator, {}),
  ],
)
def test_generators_match_twins(twin_cls, model_cls, extra):
  source, kp_source, kp_driving = _case(1)
  torch_inputs = (
    to_channels_first(source),
    torch.from_numpy(kp_source),
    torch.from_numpy(kp_driving),
  )
  twin_kwargs = (
    dict(TWIN_GEN, num_resblocks=2)
    if twin_cls is not torch_twins.SPADEGenerator
    else dict(TWIN_GEN)
  )
  if twin_cls is torch_twins.SPADEGenerator:
    twin_kwargs["num_resblocks"] = 2
  twin = _prepare(twin_cls(**twin_kwargs), *torch_inputs, seed=3)
  model = model_cls(**GEN, dense_motion=DENSE, **extra)
  variables = synthesis.convert_generator(
    _state(twin), _template(model, source, kp_source, kp_driving)
  )
  got = jax.jit(model.apply)(variables, source, kp_source, kp_driving)
  with torch.no_grad():
    want = twin(*torch_inputs)
  _close(got["prediction"], want["prediction"].permute(0, 2, 3, 1))
  _close(got["occlusion_map"], want["occlusion_map"].permute(0, 2, 3, 1))
  _close(got["deformation"], want["deformation"], atol=1e-5)
  if model_cls is MultiScaleGenerator:
    assert sorted(got["predictions"]) == [16, 32, 64]
    for size, image in want["predictions"].items():
      _close(got["predictions"][size], image.permute(0, 2, 3, 1))
  assert float(np.asarray(got["prediction"]).std()) > 1e-3


def test_spade_generator_first_layer_is_3x3_and_counts():
  source, kp_source, kp_driving = _case(2, batch=1)
  template = _template(SPADEGenerator(**GEN, dense_motion=DENSE), source, kp_source, kp_driving)
  assert template["params"]["first"]["conv"]["kernel"].shape == (3, 3, 3, 8)
  assert "u" in template["batch_stats"]["decoder"]["up_0"]["conv_s"]
  template = _template(
    OcclusionAwareGenerator(**GEN, dense_motion=DENSE), source, kp_source, kp_driving
  )
  assert template["params"]["first"]["conv"]["kernel"].shape == (7, 7, 3, 8)


def test_discriminator_matches_twin_in_eval_and_training():
  images = np.random.default_rng(3).random((2, 96, 96, 3), dtype=np.float32)
  twin = torch_twins.MultiScaleDiscriminator(
    scales=(1,), block_expansion=8, num_blocks=4, max_features=64
  )
  with torch.no_grad():
    for name, param in twin.named_parameters():
      if "norm" in name:
        param.copy_(
          torch.rand_like(param) + 0.5 if name.endswith("weight") else 0.2 * torch.randn_like(param)
        )
  torch_twins.settle_spectral_norm(twin, {"1": to_channels_first(images)})
  twin.eval()
  model = MultiScaleDiscriminator(scales=(1.0,), block_expansion=8, num_blocks=4, max_features=64)
  variables = synthesis.convert_discriminator(_state(twin), _template(model, {1.0: images}))
  features, prediction = model.apply(variables, {1.0: images})[1.0]
  with torch.no_grad():
    want_features, want_prediction = twin({"1": to_channels_first(images)})["1"]
  _close(prediction, want_prediction.permute(0, 2, 3, 1))
  for got, want in zip(features, want_features):
    _close(got, want.permute(0, 2, 3, 1))
  assert [f.shape[1] for f in features] == [46, 21, 9, 6]

  # Training mode: one power iteration on both sides, same outputs and same new u, v.
  twin.train()
  out, updates = model.apply(variables, {1.0: images}, True, mutable=["batch_stats"])
  want_features, want_prediction = twin({"1": to_channels_first(images)})["1"]
  _close(out[1.0][1], want_prediction.detach().permute(0, 2, 3, 1))
  new_u = updates["batch_stats"]["discs_1"]["down_blocks_2"]["conv"]["u"]
  _close(new_u, twin.discs["1"].down_blocks[2].conv.weight_u, atol=1e-5)


def test_perceptual_networks_match_twins():
  images = np.random.default_rng(4).random((2, 48, 48, 3), dtype=np.float32)
  for twin, model, converter in (
    (torch_twins.VGG19(), VGG19(), synthesis.convert_vgg19),
    (torch_twins.VGGFaceDag(), VGGFace(), synthesis.convert_vggface),
  ):
    twin.eval()
    variables = converter(_state(twin), _template(model, images))
    got = model.apply(variables, images)
    with torch.no_grad():
      want = twin(to_channels_first(images))
    assert [g.shape[-1] for g in got] == [64, 128, 256, 512, 512]
    for g, w in zip(got, want):
      scale = max(1.0, float(w.abs().max()))
      _close(g, w.permute(0, 2, 3, 1), atol=1e-5 * scale, rtol=1e-4)


def test_expression_vae_and_latent_discriminator_match_twins():
  rng = np.random.default_rng(5)
  features = rng.normal(size=(4, 16)).astype(np.float32)
  noise = rng.normal(size=(4, 6)).astype(np.float32)
  twin = torch_twins.ExpressionVAE(feature_dim=16, latent_dim=6, hidden=(20, 20)).eval()
  model = ExpressionVAE(feature_dim=16, latent_dim=6, hidden=(20, 20))
  template = jax.eval_shape(lambda k, f: model.init(k, f, k), jax.random.key(0), features)
  variables = synthesis.convert_by_name(_state(twin), {"params": template["params"]}, "vae")
  # Feature statistics of two batches, folded in one after the other: those of all 12 rows.
  batches = [rng.normal(2.0, 3.0, size=(n, 16)).astype(np.float32) for n in (5, 7)]
  stats = {
    "feature_count": jnp.zeros(()),
    "feature_mean": jnp.zeros(16),
    "feature_var": jnp.ones(16),
  }
  for batch in batches:
    _, updated = model.apply(
      {**variables, "batch_stats": stats},
      batch,
      method=ExpressionVAE.update_feature_stats,
      mutable=["batch_stats"],
    )
    stats = updated["batch_stats"]
  seen = np.concatenate(batches)
  np.testing.assert_allclose(stats["feature_mean"], seen.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats["feature_var"], seen.var(0), rtol=1e-4)
  assert float(stats["feature_count"]) == 12
  variables = {**variables, "batch_stats": stats}
  mean, log_var = model.apply(variables, features, method=ExpressionVAE.encode)
  latent = mean + jnp.exp(0.5 * log_var) * noise
  reconstruction = model.apply(variables, latent, method=ExpressionVAE.decode)
  sigma = np.sqrt(seen.var(0) + model.eps)
  standardized = (features - seen.mean(0)) / sigma
  with torch.no_grad():
    want = twin(torch.from_numpy(standardized.astype(np.float32)), torch.from_numpy(noise))
  _close(mean, want["mean"], atol=1e-4)
  _close(log_var, want["log_var"], atol=1e-4)
  _close(reconstruction, want["reconstruction"].numpy() * sigma + seen.mean(0), atol=1e-4)
  sample = model.apply(variables, features, jax.random.key(1))
  assert sample["latent"].shape == (4, 6) and sample["reconstruction"].shape == (4, 16)
  _close(sample["standardized_features"], standardized, atol=1e-5)
  _close(
    sample["reconstruction"],
    sample["standardized_reconstruction"] * sigma + seen.mean(0),
    atol=1e-4,
  )

  disc_twin = torch.nn.Module()
  disc_twin.mlp = torch_twins.MLP((16, 20, 20, 1), spectral=True)
  torch_twins.settle_spectral_norm(disc_twin.mlp, torch.from_numpy(features))
  disc_twin.eval()
  disc = LatentDiscriminator(hidden=(20, 20))
  variables = synthesis.convert_by_name(_state(disc_twin), _template(disc, features), "latent_disc")
  with torch.no_grad():
    want_scores = disc_twin.mlp(torch.from_numpy(features))[:, 0]
  _close(disc.apply(variables, features), want_scores, atol=1e-5)


SMALL_KP = dict(
  num_kp=3, block_expansion=8, max_features=64, num_blocks=3, reshape_channels=128, reshape_depth=4
)
SMALL_HE = dict(block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), num_kp=3)


def _face_vid2vid_twins(source, driving):
  kp = torch_twins.KPDetector(
    block_expansion=8, num_kp=3, max_features=64, reshape_channel=128, reshape_depth=4, num_blocks=3
  )
  he = torch_twins.HEEstimator(
    block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), num_kp=3
  )
  generator = torch_twins.SPADEGenerator(**dict(TWIN_GEN, num_resblocks=2))
  _, kp_s, kp_d = _case(9, batch=source.shape[0])
  torch_twins.settle_spectral_norm(
    generator, to_channels_first(source), torch.from_numpy(kp_s), torch.from_numpy(kp_d)
  )
  for i, twin in enumerate((kp, he, generator)):
    torch_twins.randomize_batchnorm(twin, seed=40 + i).eval()
  return kp, he, generator


def _torch_face_vid2vid(kp, he, generator, source, driving):
  def angles(logits):
    return (torch.softmax(logits, -1) * torch.arange(66.0)).sum(-1) * 3 - 99

  def keypoints(canonical, out):
    rotation = rotation_matrix_t(
      angles(out["yaw"]), angles(out["pitch"]), angles(out["roll"]), 3.14
    )
    return (
      torch.einsum("bij,bkj->bki", rotation, canonical)
      + out["t"][:, None]
      + out["exp"].view(canonical.shape)
    )

  with torch.no_grad():
    source_t, driving_t = to_channels_first(source), to_channels_first(driving)
    canonical = kp(source_t)["value"]
    kp_source = keypoints(canonical, he(source_t))
    kp_driving = keypoints(canonical, he(driving_t))
    return generator(source_t, kp_source, kp_driving)["prediction"].permute(0, 2, 3, 1)


def _face_vid2vid_model():
  return AnimationModel(
    variant="face_vid2vid",
    generator_kind="spade",
    motion=dict(kp_detector=SMALL_KP, he_estimator=SMALL_HE),
    generator=dict(GEN, dense_motion=DENSE),
  )


def _convert_face_vid2vid(model, twins, source):
  kp, he, generator = twins
  template = _template(model, source, source)
  motion_template = {c: template[c]["motion_estimator"] for c in template}
  motion = motion_converter.assemble(
    {
      "kp": kp_converter.convert(
        _state(kp), {c: motion_template[c]["kp"] for c in motion_template}
      ),
      "he": he_converter.convert(
        _state(he), {c: motion_template[c]["he"] for c in motion_template}
      ),
    }
  )
  image_generator = synthesis.convert_generator(
    _state(generator), {c: template[c]["image_generator"] for c in template}
  )
  return motion_converter.assemble({"motion_estimator": motion, "image_generator": image_generator})


def test_whole_face_vid2vid_model_matches_twin_animation():
  rng = np.random.default_rng(6)
  source = rng.random((2, 64, 64, 3), dtype=np.float32)
  driving = rng.random((2, 64, 64, 3), dtype=np.float32)
  twins = _face_vid2vid_twins(source, driving)
  model = _face_vid2vid_model()
  variables = _convert_face_vid2vid(model, twins, source)
  got = jax.jit(model.apply)(variables, source, driving)
  want = _torch_face_vid2vid(*twins, source, driving)
  _close(got["prediction"], want, atol=1e-3, rtol=0)
  assert float(np.abs(np.asarray(got["prediction"]) - 0.5).max()) > 0.01


def test_one_source_encoding_drives_many_frames():
  rng = np.random.default_rng(7)
  source = rng.random((1, 64, 64, 3), dtype=np.float32)
  driving = rng.random((3, 64, 64, 3), dtype=np.float32)
  model = _face_vid2vid_model()
  variables = random_variables(model, source, source)

  @jax.jit
  def from_one_encoding(variables, source, driving):
    state = model.apply(variables, source, method=AnimationModel.encode_source)
    return model.apply(variables, state, driving, method=AnimationModel.animate), state

  batched, state = from_one_encoding(variables, source, driving)
  pairs = jax.jit(model.apply)(variables, np.repeat(source, 3, axis=0), driving)  # 3 separate pairs
  assert batched["prediction"].shape == (3, 64, 64, 3)
  _close(batched["prediction"], pairs["prediction"], atol=1e-5)
  _close(batched["kp_driving"], pairs["kp_driving"], atol=1e-5)
  with pytest.raises(ValueError, match="cannot drive"):
    doubled = jax.tree.map(lambda x: jnp.concatenate([x, x]), state)
    jax.eval_shape(
      lambda v, st, d: model.apply(v, st, d, method=AnimationModel.animate),
      variables,
      doubled,
      driving,
    )


def test_whole_mmfa_model_bfloat16_close_to_float32():
  """bfloat16 activations, float32 parameters, MMFA variant with the multi-scale generator."""
  rng = np.random.default_rng(8)
  source = rng.random((2, 64, 64, 3), dtype=np.float32)
  driving = rng.random((2, 64, 64, 3), dtype=np.float32)
  kwargs = dict(
    variant="mmfa",
    generator_kind="multiscale",
    motion=dict(
      kp_detector=SMALL_KP,
      hopenet=dict(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64)),
      scale_translation=dict(block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)),
      expression_encoder=dict(stem_features=8, widths=(16, 32), latent_dim=12),
      expression_decoder=dict(hidden=(16,)),
    ),
    generator=dict(GEN, dense_motion=DENSE),
  )
  # The frozen Hopenet's head poses are inputs of the model (random degrees here).
  poses = tuple(
    {k: jnp.asarray(rng.uniform(-30, 30, 2), jnp.float32) for k in ("yaw", "pitch", "roll")}
    for _ in range(2)
  )
  variables = random_variables(AnimationModel(**kwargs), source, driving, head_poses=poses)
  full = jax.jit(AnimationModel(**kwargs).apply)(variables, source, driving, head_poses=poses)
  half = jax.jit(AnimationModel(**kwargs, dtype=jnp.bfloat16).apply)(
    variables, source, driving, head_poses=poses
  )
  assert sorted(full["predictions"]) == [16, 32, 64]
  difference = float(np.abs(np.asarray(half["prediction"]) - np.asarray(full["prediction"])).max())
  kp_difference = float(
    np.abs(np.asarray(half["kp_driving"]) - np.asarray(full["kp_driving"])).max()
  )
  print(f"bf16 vs f32: prediction {difference:.2e}, kp_driving {kp_difference:.2e}")
  assert difference < 0.02 and kp_difference < 0.01
