"""mmfa_jax networks (Flax Linen, channels-last), one module per network family."""

from mmfa_jax.models.dense_motion import DenseMotionNetwork
from mmfa_jax.models.he_estimator import HEEstimator, HETrunk
from mmfa_jax.models.hopenet import Hopenet, prepare_hopenet_input
from mmfa_jax.models.keypoint_detector import KPDetector
from mmfa_jax.models.motion import MotionEstimator, motion_estimator_from_config
from mmfa_jax.models.motion_heads import ExpressionDecoder, ExpressionEncoder, ScaleTranslationHead

__all__ = [
  "DenseMotionNetwork",
  "ExpressionDecoder",
  "ExpressionEncoder",
  "HEEstimator",
  "HETrunk",
  "Hopenet",
  "KPDetector",
  "MotionEstimator",
  "ScaleTranslationHead",
  "motion_estimator_from_config",
  "prepare_hopenet_input",
]
