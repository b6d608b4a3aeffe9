"""The geometry and layer helpers every mmfa_jax network stands on (channels-last, (x, y, z))."""

from mmfa_jax.ops.grid_sample import (
  grid_sample,
  grid_sample_2d,
  grid_sample_3d,
  make_coordinate_grid,
)
from mmfa_jax.ops.keypoints import (
  adapt_movement_scale,
  face_vid2vid_keypoints,
  gaussian_heatmaps,
  heatmap_representation,
  heatmap_spread,
  mmfa_keypoints,
  relative_keypoints,
  sparse_motions,
)
from mmfa_jax.ops.pyramid import antialias_downsample, antialias_kernel, image_pyramid
from mmfa_jax.ops.rotation import (
  bins_to_degrees,
  euler_to_rotation_matrix,
  reference_rotation_matrix,
  rotation_matrix,
  rotation_matrix_to_euler,
)
from mmfa_jax.ops.tps import (
  TPSTransform,
  sample_similarity_transform,
  sample_tps_transform,
  warp_coordinates,
  warp_image,
)

__all__ = [
  "TPSTransform",
  "adapt_movement_scale",
  "antialias_downsample",
  "antialias_kernel",
  "bins_to_degrees",
  "euler_to_rotation_matrix",
  "face_vid2vid_keypoints",
  "gaussian_heatmaps",
  "grid_sample",
  "grid_sample_2d",
  "grid_sample_3d",
  "heatmap_representation",
  "heatmap_spread",
  "image_pyramid",
  "make_coordinate_grid",
  "mmfa_keypoints",
  "reference_rotation_matrix",
  "relative_keypoints",
  "rotation_matrix",
  "rotation_matrix_to_euler",
  "sample_similarity_transform",
  "sample_tps_transform",
  "sparse_motions",
  "warp_coordinates",
  "warp_image",
]
