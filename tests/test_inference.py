"""mmfa_jax.inference: the reference demo's semantics against PyTorch, MMFA's relative motion and
edits against hand-computed keypoints, loading of every checkpoint kind, and clear errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_helpers import random_vae, save_training_run
from scipy.spatial import ConvexHull

from configs import synthetic
from mmfa_jax.checkpoints import ConvertedWeightsError, save_converted
from mmfa_jax.inference import Animator, CheckpointKindError
from mmfa_jax.initialization import init_variables
from mmfa_jax.models import Hopenet, animation_model_from_config
from mmfa_jax.models.expression_vae import ExpressionVAE
from mmfa_jax.models.motion import zero_head_pose
from pretrained_converters import torch_reference as ref
from pretrained_converters.convert import convert_face_vid2vid

SIZE = 64
FRAMES = 5  # with batch_size 4: one full and one padded batch


def _images(seed, count):
  return np.random.default_rng(seed).random((count, SIZE, SIZE, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# face_vid2vid: a converted reference checkpoint against the reference demo in PyTorch


@pytest.fixture(scope="module")
def face_vid2vid(tmp_path_factory):
  """(converted directory, torch modules): random reference modules with 6 keypoints (a 3D convex
  hull for adapt_scale needs 4 or more), saved as the reference saves them and converted."""
  torch.manual_seed(3)
  config = synthetic.get_config("tiny:face_vid2vid")
  config.model.num_kp = 6
  modules = ref.face_vid2vid_modules(config.model, "spade")
  source, kp = torch.rand(1, 3, SIZE, SIZE), 0.5 * torch.rand(1, 6, 3)
  ref.settle_spectral_norm(modules["generator"], source, kp, kp)
  for i, module in enumerate(modules.values()):
    ref.randomize_batchnorm(module, seed=i).eval()
  root = tmp_path_factory.mktemp("fv2v")
  path = root / "checkpoint.pth.tar"
  torch.save({name: module.state_dict() for name, module in modules.items()}, path)
  conversion = convert_face_vid2vid(str(path), config, "spade")
  directory = root / "converted"
  save_converted(
    directory,
    conversion.variables,
    {
      "kind": "face_vid2vid",
      "config": "configs/synthetic.py:tiny:face_vid2vid",
      "generator": "spade",
      "model_config": config.model.to_json(),
      "image_size": SIZE,
    },
  )
  return directory, modules


def _demo(modules, source, driving, *, relative, adapt_scale=False, yaw=None):
  """architecture.md 6.4 in PyTorch: demo.py's keypoints (free-view yaw replaces the predicted
  driving yaw; kp_driving_initial keeps its own) and the generator, frame by frame."""
  to_torch = lambda x: torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)  # noqa: E731
  source = to_torch(source[None])

  def keypoints(canonical, he, yaw_degrees=None):
    angles = [ref._angles(he[k]) for k in ("yaw", "pitch", "roll")]
    if yaw_degrees is not None:
      angles[0] = torch.full_like(angles[0], yaw_degrees)
    rotation = ref.reference_rotation(*angles)
    rotated = torch.einsum("bij,bkj->bki", rotation, canonical)
    return rotated + he["t"][:, None] + he["exp"].view(canonical.shape)

  with torch.no_grad():
    canonical = modules["kp_detector"](source)["value"]
    kp_source = keypoints(canonical, modules["he_estimator"](source))
    kp_initial = keypoints(canonical, modules["he_estimator"](to_torch(driving[:1])))
    scale = 1.0
    if adapt_scale:
      volume = lambda kp: ConvexHull(kp[0].numpy()).volume  # noqa: E731
      scale = math.sqrt(volume(kp_source)) / math.sqrt(volume(kp_initial))
    frames, targets = [], []
    for frame in driving:
      kp_driving = keypoints(canonical, modules["he_estimator"](to_torch(frame[None])), yaw)
      if relative:
        kp_driving = kp_source + (kp_driving - kp_initial) * scale
      targets.append(kp_driving[0].numpy())
      out = modules["generator"](source, kp_source, kp_driving)["prediction"]
      frames.append(out.permute(0, 2, 3, 1)[0].numpy())
  return np.stack(frames), np.stack(targets)


@pytest.mark.parametrize(
  "options",
  [
    dict(mode="relative", adapt_scale=True),
    dict(mode="absolute"),
    dict(mode="relative", yaw=20.0),
  ],
  ids=["relative-adapt-scale", "absolute", "relative-free-view-yaw"],
)
def test_face_vid2vid_animation_is_the_reference_demo(face_vid2vid, options):
  directory, modules = face_vid2vid
  animator = Animator.from_checkpoint(directory, batch_size=4, variant="face_vid2vid")
  source, driving = _images(0, 1)[0], _images(1, FRAMES)
  want_frames, want_kp = _demo(
    modules,
    source,
    driving,
    relative=options["mode"] == "relative",
    adapt_scale=options.get("adapt_scale", False),
    yaw=options.get("yaw"),
  )
  state = animator.encode_source(source)
  motion = animator.motion(driving, state)
  kp = animator.driving_keypoints(
    animator.source_motion(state),
    motion,
    motion.take(slice(0, 1)),
    canonical_kp=state["motion"]["canonical_kp"],
    **options,
  )
  np.testing.assert_allclose(kp, want_kp, atol=1e-4)
  frames = animator.animate(source, driving, **options)
  assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.float32
  np.testing.assert_allclose(frames, want_frames, atol=1e-3)


# --------------------------------------------------------------------------------------------
# MMFA: random-init tiny model


def _rotation(yaw, pitch, roll):
  """architecture.md 6.2 with the exact pi: R = R_pitch(x) R_yaw(y) R_roll(z), degrees."""
  y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
  rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
  ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
  rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
  return rx @ ry @ rz


def _mmfa_config():
  return synthetic.get_config("tiny:mmfa")  # MMFA with the (here random) frozen Hopenet


def _mmfa_variables(config, seed=0):
  model = animation_model_from_config(config.model)
  image = jnp.zeros((1, SIZE, SIZE, 3))
  poses = (zero_head_pose(1), zero_head_pose(1))
  return _noisy(init_variables(model, seed, image, image, False, poses), seed)


def _hopenet_variables(config, seed=0):
  """The frozen Hopenet the MMFA model reads (random, like the model)."""
  hopenet = Hopenet(**dict(config.model.hopenet))
  return _noisy(init_variables(hopenet, seed, np.zeros((1, SIZE, SIZE, 3), np.float32)), seed)


def _noisy(variables, seed):
  # Noise on every parameter (the initialiser zeroes some output layers, which would make the
  # keypoints coincide and the expression vanish) and random BatchNorm statistics.
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda x: np.asarray(x + rng.normal(0.0, 0.05, x.shape), np.float32), variables["params"]
  )
  stats = jax.tree_util.tree_map_with_path(
    lambda path, x: np.asarray(
      rng.uniform(0.5, 1.5, x.shape) if path[-1].key == "var" else rng.normal(0, 0.1, x.shape),
      np.float32,
    ),
    variables["batch_stats"],
  )
  return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def mmfa():
  config = _mmfa_config()
  return Animator(
    config.model,
    _mmfa_variables(config),
    image_size=SIZE,
    batch_size=4,
    vae=random_vae(config),
    frozen={"hopenet": _hopenet_variables(config)},
  )


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def _posed(motion, canonical, i, rotation=None, translation=None, scale=None, deformation=None):
  """s R (x_c + delta) + t for frame i (MMFA, deformation in the canonical frame), in numpy."""
  rotation = motion.rotation[i] if rotation is None else rotation
  translation = motion.translation[i] if translation is None else translation
  scale = motion.scale[i] if scale is None else scale
  deformation = motion.expression_deformation[i] if deformation is None else deformation
  return scale * (canonical + deformation) @ np.asarray(rotation).T + translation


def test_mmfa_relative_and_absolute_keypoints(mmfa):
  source, driving = _images(2, 1)[0], _images(3, FRAMES)
  state = mmfa.encode_source(source)
  canonical = np.asarray(state["motion"]["canonical_kp"][0])
  src = _np(mmfa.source_motion(state))
  drv = _np(mmfa.motion(driving, state))
  common = dict(canonical_kp=state["motion"]["canonical_kp"])
  initial = mmfa.motion(driving[:1], state)

  absolute = mmfa.driving_keypoints(
    mmfa.source_motion(state), mmfa.motion(driving, state), initial, mode="absolute", **common
  )
  np.testing.assert_allclose(absolute, drv.kp, atol=1e-5)  # the model's own driving keypoints

  for adapt in (False, True):
    relative = np.asarray(
      mmfa.driving_keypoints(
        mmfa.source_motion(state),
        mmfa.motion(driving, state),
        initial,
        mode="relative",
        adapt_scale=adapt,
        **common,
      )
    )
    movement = src.scale[0] / drv.scale[0] if adapt else 1.0
    for i in range(FRAMES):
      rotation = drv.rotation[i] @ drv.rotation[0].T @ src.rotation[0]
      translation = src.translation[0] + (drv.translation[i] - drv.translation[0]) * movement
      scale = src.scale[0] * drv.scale[i] / drv.scale[0]
      want = _posed(drv, canonical, i, rotation, translation, scale)
      np.testing.assert_allclose(relative[i], want, atol=1e-5)
    # frame 0 of the driver gives the source's own pose with the driver's expression
    want = _posed(src, canonical, 0, deformation=drv.expression_deformation[0])
    np.testing.assert_allclose(relative[0], want, atol=1e-5)

  frames = mmfa.animate(source, driving, mode="relative")
  kp = mmfa.driving_keypoints(
    mmfa.source_motion(state), mmfa.motion(driving, state), initial, mode="relative", **common
  )
  np.testing.assert_allclose(frames, mmfa.render(state, kp), atol=1e-5)
  assert frames.shape == (FRAMES, SIZE, SIZE, 3)
  assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_mmfa_edits(mmfa):
  source, other = _images(4, 2)
  state = mmfa.encode_source(source)
  canonical = np.asarray(state["motion"]["canonical_kp"][0])
  src = _np(mmfa.source_motion(state))

  # No edit is an exact identity: the source's own keypoints, the plain reconstruction.
  np.testing.assert_array_equal(mmfa.edit_keypoints(state), src.kp)
  np.testing.assert_allclose(mmfa.edit(source), mmfa.render(state, src.kp)[0], atol=1e-6)

  # yaw + 20 degrees: the keypoints turn by exactly that about the source's head centre.
  yaw, pitch, roll = float(src.yaw[0]), float(src.pitch[0]), float(src.roll[0])
  turned = np.asarray(mmfa.edit_keypoints(state, yaw=yaw + 20.0))[0]
  want = _posed(src, canonical, 0, rotation=_rotation(yaw + 20.0, pitch, roll))
  np.testing.assert_allclose(turned, want, atol=1e-5)
  assert np.abs(mmfa.edit(source, yaw=yaw + 20.0) - mmfa.edit(source)).max() > 1e-3
  # ... which for a pure yaw pose is a rotation by 20 degrees about the y axis
  level = np.asarray(mmfa.edit_keypoints(state, yaw=0.0, pitch=0.0, roll=0.0))[0]
  level_turned = np.asarray(mmfa.edit_keypoints(state, yaw=20.0, pitch=0.0, roll=0.0))[0]
  centred = (level - src.translation[0]) @ _rotation(20.0, 0.0, 0.0).T + src.translation[0]
  np.testing.assert_allclose(level_turned, centred, atol=1e-5)

  # Attributes by value and from another image; the rest kept.
  moved = np.asarray(mmfa.edit_keypoints(state, translation=(0.1, -0.2, 0.0), scale=0.8))[0]
  want = _posed(src, canonical, 0, translation=np.array([0.1, -0.2, 0.0]), scale=0.8)
  np.testing.assert_allclose(moved, want, atol=1e-5)
  theirs = _np(mmfa.motion(other, state))
  expression = np.asarray(mmfa.edit_keypoints(state, expression_from=other, expression_scale=0.5))
  want = _posed(src, canonical, 0, deformation=0.5 * theirs.expression_deformation[0])
  np.testing.assert_allclose(expression[0], want, atol=1e-5)
  posed_like = np.asarray(mmfa.edit_keypoints(state, yaw=other, pitch=other, roll=other))[0]
  rotation = _rotation(float(theirs.yaw[0]), float(theirs.pitch[0]), float(theirs.roll[0]))
  np.testing.assert_allclose(posed_like, _posed(src, canonical, 0, rotation=rotation), atol=1e-5)

  # A sweep renders one frame per value, each the single edit of that value.
  values = [-30.0, 0.0, 30.0]
  frames = mmfa.sweep(source, "yaw", values)
  assert frames.shape == (3, SIZE, SIZE, 3)
  np.testing.assert_allclose(frames[2], mmfa.edit(source, yaw=30.0), atol=1e-5)
  shifted = mmfa.sweep(source, "tx", [0.0, 0.2])
  np.testing.assert_allclose(
    shifted[1], mmfa.edit(source, translation=(0.2, *src.translation[0, 1:])), atol=1e-5
  )
  with pytest.raises(ValueError, match="attribute must be one of"):
    mmfa.sweep(source, "smile", values)


def test_expression_interpolation_and_sampling_through_the_vae(mmfa):
  source, a, b = _images(5, 3)
  steps = 5
  frames = mmfa.interpolate_expression(source, a, b, steps)
  assert frames.shape == (steps, SIZE, SIZE, 3)
  # Hand-built: latent means of a and b, the midpoint decoded to features, to deformations on the
  # source's canonical keypoints, the source's pose kept.
  vae, vae_variables = mmfa.vae
  state = mmfa.encode_source(source)
  latents = mmfa.motion(np.stack([a, b]), state).expression_latent
  mean, _ = vae.apply(vae_variables, latents, method=ExpressionVAE.encode)
  middle = vae.apply(vae_variables, 0.5 * (mean[:1] + mean[1:]), method=ExpressionVAE.decode)
  deformation = mmfa.model.apply(
    mmfa.variables,
    middle,
    state["motion"]["canonical_kp"],
    method=lambda m, f, c: m.expression_deformation(f, c),
  )
  src = _np(mmfa.source_motion(state))
  canonical = np.asarray(state["motion"]["canonical_kp"][0])
  kp = _posed(src, canonical, 0, deformation=np.asarray(deformation[0]))
  np.testing.assert_allclose(frames[2], mmfa.render(state, kp[None])[0], atol=1e-5)

  samples = mmfa.sample_expressions(source, 3, seed=1)
  assert samples.shape == (3, SIZE, SIZE, 3)
  np.testing.assert_array_equal(samples, mmfa.sample_expressions(source, 3, seed=1))
  assert np.abs(samples[0] - samples[1]).max() > 0


# --------------------------------------------------------------------------------------------
# Loading training runs, and what is refused


def test_training_runs_load_with_their_hopenet_and_vae(tmp_path, mmfa):
  config = _mmfa_config()
  trained, hopenet = _mmfa_variables(config), _hopenet_variables(config)
  run = tmp_path / "mmfa_run"
  save_training_run(run, config, trained)
  with pytest.raises(CheckpointKindError, match="frozen Hopenet"):
    Animator.from_checkpoint(run)
  hopenet_dir = tmp_path / "hopenet"
  save_converted(hopenet_dir, hopenet, {"kind": "hopenet"})
  animator = Animator.from_checkpoint(run, hopenet=hopenet_dir, batch_size=4)
  source = _images(6, 1)[0]
  reference = Animator(
    config.model, trained, image_size=SIZE, batch_size=4, frozen={"hopenet": hopenet}
  )
  with pytest.raises(ValueError, match="reads the frozen Hopenet"):
    Animator(config.model, trained, image_size=SIZE)
  np.testing.assert_allclose(animator.edit(source, yaw=10.0), reference.edit(source, yaw=10.0),
                             atol=1e-6)  # fmt: skip
  with pytest.raises(CheckpointKindError, match="has no expression VAE"):
    animator.sample_expressions(source, 2)
  with pytest.raises(CheckpointKindError, match="a mmfa checkpoint, but a face_vid2vid"):
    Animator.from_checkpoint(run, hopenet=hopenet_dir, variant="face_vid2vid")

  # A run that kept a parameter average (optim.ema_decay) loads it; averaged=False (the CLIs'
  # --raw-weights) its last parameters.
  last = jax.tree.map(lambda x: x + 1.0, trained["params"])
  averaged_run = tmp_path / "averaged_run"
  save_training_run(averaged_run, config, dict(trained, params=last), average=trained["params"])
  for averaged, want in ((True, trained["params"]), (False, last)):
    loaded = Animator.from_checkpoint(averaged_run, hopenet=hopenet_dir, averaged=averaged)
    jax.tree.map(np.testing.assert_array_equal, loaded.variables["params"], want)

  # The expression VAE's run names its MMFA run; loading it gives both.
  from configs import vox_vae

  vae_config = vox_vae.get_config("synthetic")
  vae_config.mmfa.workdir = str(run)
  vae_config.expression_vae.update(latent_dim=4, hidden=(16, 16))
  vae_config.image_size = SIZE
  _, vae_variables = random_vae(config)
  vae_run = tmp_path / "vae_run"
  save_training_run(vae_run, vae_config, vae_variables)
  with_vae = Animator.from_checkpoint(vae_run, hopenet=hopenet_dir, batch_size=4)
  assert with_vae.vae[0].latent_dim == 4
  samples = with_vae.sample_expressions(source, 2, seed=0)
  assert samples.shape == (2, SIZE, SIZE, 3) and np.all(np.isfinite(samples))


def test_directories_that_are_not_model_checkpoints_are_refused(tmp_path):
  with pytest.raises(CheckpointKindError, match="no such checkpoint directory"):
    Animator.from_checkpoint(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointKindError, match="not an mmfa_jax checkpoint"):
    Animator.from_checkpoint(tmp_path / "empty")
  hopenet = Hopenet(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64))
  variables = init_variables(hopenet, 0, np.zeros((1, 64, 64, 3), np.float32))
  save_converted(tmp_path / "hopenet", variables, {"kind": "hopenet"})
  with pytest.raises(CheckpointKindError, match="holds converted 'hopenet' weights"):
    Animator.from_checkpoint(tmp_path / "hopenet")
  assert issubclass(CheckpointKindError, ConvertedWeightsError)


def test_damaged_training_runs_are_refused_naming_the_checkpoint(tmp_path):
  import shutil

  from mmfa_jax.checkpoints import load_training_run

  config = _mmfa_config()
  trained = jax.tree.map(np.array, _mmfa_variables(config))
  run = tmp_path / "run"
  save_training_run(run, config, trained)
  for path in (run / "checkpoints" / "3" / "generator").rglob("*"):
    if path.is_file() and path.parent.name == "d":  # the array data files
      path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(
    ConvertedWeightsError, match=r"checkpoints/3: cannot be restored \(.*byte range"
  ):
    load_training_run(run)
  shutil.rmtree(run / "checkpoints" / "3")  # no complete step left
  with pytest.raises(ConvertedWeightsError, match="holds no complete checkpoint"):
    load_training_run(run)
  leaf = next(iter(jax.tree_util.tree_leaves(trained["params"])))
  leaf.flat[0] = np.nan
  nan_run = tmp_path / "nan_run"
  save_training_run(nan_run, config, trained)
  hopenet_dir = tmp_path / "hopenet"
  save_converted(hopenet_dir, _hopenet_variables(config), {"kind": "hopenet"})
  with pytest.raises(
    ConvertedWeightsError, match=r"nan_run: non-finite weights .* in model/params/"
  ):
    Animator.from_checkpoint(nan_run, hopenet=hopenet_dir)


def test_non_finite_weights_are_refused_with_the_tensor_names(tmp_path):
  from mmfa_jax.checkpoints import load_converted

  hopenet = Hopenet(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64))
  variables = jax.tree.map(
    np.array, init_variables(hopenet, 0, np.zeros((1, 64, 64, 3), np.float32))
  )
  variables["params"]["fc_yaw"]["bias"][3] = np.nan
  variables["batch_stats"]["bn1"]["var"][0] = np.inf
  save_converted(tmp_path / "hopenet", variables, {"kind": "hopenet"})
  with pytest.raises(
    ConvertedWeightsError,
    match=r"non-finite weights .* in batch_stats/bn1/var, params/fc_yaw/bias$",
  ):
    load_converted(tmp_path / "hopenet", "hopenet")


def test_animate_is_one_compiled_call_per_driving_batch(mmfa, monkeypatch):
  """iter_animate runs motion, target keypoints and render as one call per batch; its frames are
  the staged path's (motion, driving_keypoints, render) with every option."""
  source, driving = _images(4, 1)[0], _images(5, FRAMES)
  options = dict(mode="relative", adapt_scale=True, pitch=10.0)
  state = mmfa.encode_source(source)
  motion = mmfa.motion(driving, state)
  kp = mmfa.driving_keypoints(
    mmfa.source_motion(state),
    motion,
    motion.take(slice(0, 1)),
    canonical_kp=state["motion"]["canonical_kp"],
    **options,
  )
  staged = mmfa.render(state, kp)

  calls = []
  fused = mmfa._animate_batch

  def counted(*args, **kwargs):
    calls.append(args[2].shape)  # the driving frames
    return fused(*args, **kwargs)

  def forbidden(*args, **kwargs):
    raise AssertionError("a separate motion or render call during animate")

  monkeypatch.setattr(mmfa, "_animate_batch", counted)
  monkeypatch.setattr(mmfa, "_motion", forbidden)
  monkeypatch.setattr(mmfa, "_render", forbidden)
  frames = mmfa.animate(source, driving, **options)
  assert calls == [(4, SIZE, SIZE, 3)] * 2  # FRAMES = 5: one full and one padded batch
  np.testing.assert_allclose(frames, staged, atol=1e-5)


def test_bfloat16_animation_is_close_to_float32(mmfa):
  """``dtype='bfloat16'``: same parameters, bfloat16 compute; frames within 0.05 of float32 at
  every pixel and 0.01 on average (values in [0, 1]), keypoints within 0.02."""
  config = _mmfa_config()
  half = Animator(
    config.model,
    mmfa.variables,
    image_size=SIZE,
    batch_size=4,
    dtype=jnp.bfloat16,
    frozen=mmfa.frozen,
  )
  assert half.dtype == "bfloat16"
  source, driving = _images(6, 1)[0], _images(7, FRAMES)
  state, half_state = mmfa.encode_source(source), half.encode_source(source)
  assert half_state["motion"]["kp"].dtype == jnp.float32
  np.testing.assert_allclose(half_state["motion"]["kp"], state["motion"]["kp"], atol=0.02)
  want = mmfa.animate(source, driving)
  got = half.animate(source, driving)
  assert got.dtype == np.float32
  difference = np.abs(got - want)
  assert difference.max() < 0.05 and difference.mean() < 0.01, (difference.max(), difference.mean())
  with pytest.raises(ValueError, match="dtype"):
    Animator(config.model, mmfa.variables, image_size=SIZE, dtype="float16")


def test_animation_copies_no_weights_to_the_device_per_call(mmfa):
  """The Animator holds its variables on the device (they were given as numpy arrays): a driving
  batch's call transfers its frames explicitly and nothing else from the host."""
  leaves = jax.tree.leaves((mmfa.variables, mmfa.frozen, mmfa.vae[1]))
  assert all(isinstance(x, jax.Array) for x in leaves)
  state = mmfa.encode_source(_images(6, 1)[0])
  driving = _images(7, FRAMES)
  want = np.stack(list(mmfa.iter_animate_encoded(state, driving)))
  with jax.transfer_guard_host_to_device("disallow"):
    got = np.stack(list(mmfa.iter_animate_encoded(state, driving)))
  np.testing.assert_array_equal(got, want)
