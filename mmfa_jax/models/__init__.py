"""mmfa_jax networks (Flax Linen, channels-last), one module per network family."""

from mmfa_jax.models.animation import AnimationModel, animation_model_from_config
from mmfa_jax.models.dense_motion import DenseMotionNetwork
from mmfa_jax.models.discriminator import Discriminator, MultiScaleDiscriminator
from mmfa_jax.models.expression_vae import ExpressionVAE, LatentDiscriminator
from mmfa_jax.models.generator import (
  MultiScaleGenerator,
  OcclusionAwareGenerator,
  SPADEDecoder,
  SPADEGenerator,
)
from mmfa_jax.models.he_estimator import HEEstimator, HETrunk
from mmfa_jax.models.hopenet import Hopenet, prepare_hopenet_input
from mmfa_jax.models.inception import FIDInception
from mmfa_jax.models.keypoint_detector import KPDetector
from mmfa_jax.models.lpips import LPIPS
from mmfa_jax.models.motion import FaceVid2VidMotionEstimator, MMFAMotionEstimator
from mmfa_jax.models.motion_heads import ExpressionDecoder, ExpressionEncoder, ScaleTranslationHead
from mmfa_jax.models.perceptual import VGG19, VGGFace
from mmfa_jax.models.variants import (
  MMFA,
  FaceVid2Vid,
  Variant,
  motion_estimator_from_config,
  variant_from_config,
)

__all__ = [
  "LPIPS",
  "MMFA",
  "VGG19",
  "AnimationModel",
  "DenseMotionNetwork",
  "Discriminator",
  "ExpressionDecoder",
  "ExpressionEncoder",
  "ExpressionVAE",
  "FIDInception",
  "FaceVid2Vid",
  "FaceVid2VidMotionEstimator",
  "HEEstimator",
  "HETrunk",
  "Hopenet",
  "KPDetector",
  "LatentDiscriminator",
  "MMFAMotionEstimator",
  "MultiScaleDiscriminator",
  "MultiScaleGenerator",
  "OcclusionAwareGenerator",
  "SPADEDecoder",
  "SPADEGenerator",
  "ScaleTranslationHead",
  "VGGFace",
  "Variant",
  "animation_model_from_config",
  "motion_estimator_from_config",
  "prepare_hopenet_input",
  "variant_from_config",
]
