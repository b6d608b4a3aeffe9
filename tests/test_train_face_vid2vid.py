"""The face-vid2vid training step (``configs/synthetic.py:tiny:face_vid2vid``: tiny networks on
vox.py's losses): every loss term of the variant is finite and the generator update is taken; perceptual pyramids VGG19 cannot see are
refused at start."""

import jax
import numpy as np
import pytest

from configs import synthetic
from mmfa_jax.initialization import init_variables
from mmfa_jax.models.perceptual import VGG19_MIN_SIZE
from mmfa_jax.objective import Networks, required_pretrained
from mmfa_jax.sharding import make_mesh
from mmfa_jax.train import Trainer

BATCH = 2


@pytest.fixture(scope="module", autouse=True)
def no_persistent_cache_writes():
  """Nothing of this module goes to the session's persistent compilation cache (as test_train)."""
  previous = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
  yield
  jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)


def _random_frozen(config):
  """Random variables of the frozen networks the config needs (their values do not matter here)."""
  nets, size = Networks.from_config(config), config.image_size
  frozen = {}
  for kind in required_pretrained(config):
    shape = (1, 224, 224, 3) if kind == "hopenet" else (1, size, size, 3)
    frozen[kind] = init_variables(getattr(nets, kind), 0, np.zeros(shape, np.float32))
  return frozen


def test_face_vid2vid_step_trains_every_term():
  config = synthetic.get_config("tiny:face_vid2vid")
  config.data.batch_size = BATCH
  assert set(required_pretrained(config)) == {"vgg19", "vggface"}
  trainer = Trainer(config, mesh=make_mesh(1), frozen=_random_frozen(config))
  generator, discriminator = trainer.init_states(0)
  rng = np.random.default_rng(0)
  size = config.image_size
  images = rng.uniform(size=(2, BATCH, size, size, 3)).astype(np.float32)
  batch = trainer.global_batch({"source": images[0], "driving": images[1]})
  before = np.asarray(jax.tree.leaves(generator.params)[0]).copy()
  generator, _, metrics, _ = trainer.step(generator, discriminator, batch, jax.random.key(1))
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  # The face-vid2vid terms of vox.py's losses (architecture.md 9), each computed and finite.
  for term in ("perceptual", "vggface", "generator_gan", "feature_matching", "equivariance",
               "keypoint_prior", "deformation_prior", "discriminator_gan"):  # fmt: skip
    assert np.isfinite(metrics[term]) and metrics[term] > 0, (term, metrics[term])
  assert np.isfinite(metrics["generator_loss"])
  assert metrics["generator_skipped"] == 0 and metrics["discriminator_skipped"] == 0
  assert not np.array_equal(before, np.asarray(jax.tree.leaves(generator.params)[0]))


def test_vgg19_min_size_is_where_its_last_tap_empties():
  from mmfa_jax.models.perceptual import VGG19

  def last_tap(size):
    image = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
    variables = jax.eval_shape(VGG19().init, jax.random.key(0), image)
    return jax.eval_shape(VGG19().apply, variables, image)[-1].shape

  assert last_tap(VGG19_MIN_SIZE) == (1, 1, 1, 512)
  assert last_tap(VGG19_MIN_SIZE // 2)[1:3] == (0, 0)


@pytest.mark.parametrize("variant", ["face_vid2vid", "mmfa"])
def test_perceptual_images_too_small_for_vgg19_are_refused(variant):
  config = synthetic.get_config(f"tiny:{variant}")
  if variant == "face_vid2vid":  # 64 px at scale 0.125: 8 px, empty after VGG19's poolings
    config.perceptual_scales = (1.0, 0.5, 0.25, 0.125)
  else:
    config.loss.perceptual_min_size = VGG19_MIN_SIZE // 2
  with pytest.raises(ValueError, match=r"gives 8 px perceptual images.*at least 16 px"):
    required_pretrained(config)
  config.loss.perceptual_features = "pixels"  # no VGG19: any size
  assert "vgg19" not in required_pretrained(config)
