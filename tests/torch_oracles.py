"""PyTorch (CPU) reference computations shared by the tests. Channels-last in, channels-last out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pretrained_converters.torch_reference import antialias_t


def to_channels_first(array: np.ndarray) -> torch.Tensor:
  """(B, *spatial, C) numpy -> (B, C, *spatial) torch tensor."""
  perm = (0, array.ndim - 1, *range(1, array.ndim - 1))
  return torch.from_numpy(np.array(array)).permute(*perm).contiguous()


def to_channels_last(tensor: torch.Tensor) -> np.ndarray:
  """(B, C, *spatial) torch tensor -> (B, *spatial, C) numpy."""
  perm = (0, *range(2, tensor.ndim), 1)
  return tensor.detach().permute(*perm).numpy()


def grid_sample_with_grads(
  inputs: np.ndarray,
  grid: np.ndarray,
  cotangent: np.ndarray,
  padding_mode: str,
  align_corners: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """torch grid_sample output and the gradients of sum(output * cotangent) w.r.t. inputs and grid."""
  inputs_t = to_channels_first(inputs).requires_grad_(True)
  grid_t = torch.from_numpy(np.ascontiguousarray(grid)).requires_grad_(True)
  output = F.grid_sample(
    inputs_t, grid_t, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
  )
  (output * to_channels_first(cotangent)).sum().backward()
  return to_channels_last(output), to_channels_last(inputs_t.grad), grid_t.grad.numpy()


def torch_antialias(images: np.ndarray, scale: float) -> np.ndarray:
  """``antialias_t`` on channels-last numpy images."""
  if scale == 1:
    return images
  return to_channels_last(antialias_t(to_channels_first(images), scale))


def coordinate_grid_t(height: int, width: int) -> torch.Tensor:
  """(H, W, 2) reference grid over [-1, 1] inclusive, last axis (x, y)."""
  x = 2 * (torch.arange(width, dtype=torch.float32) / (width - 1)) - 1
  y = 2 * (torch.arange(height, dtype=torch.float32) / (height - 1)) - 1
  return torch.stack([x.view(1, -1).repeat(height, 1), y.view(-1, 1).repeat(1, width)], dim=-1)


def tps_warp_coordinates_t(
  affine: torch.Tensor, control_points: torch.Tensor, weights: torch.Tensor, points: torch.Tensor
) -> torch.Tensor:
  """The reference's Transform.warp_coordinates (architecture.md 9.2): (B, N, 2) -> (B, N, 2)."""
  theta = affine[:, None]  # (B, 1, 2, 3)
  warped = (theta[..., :2] @ points[..., None]).squeeze(-1) + theta[..., 2]
  distances = (points[:, :, None] - control_points[None, None]).abs().sum(-1)  # L1
  radial = distances**2 * torch.log(distances + 1e-6)
  return warped + (radial * weights[:, None]).sum(-1, keepdim=True)


def tps_warp_image_t(
  affine: torch.Tensor, control_points: torch.Tensor, weights: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
  """The reference's Transform.transform_frame on NCHW images (reflection, align_corners False)."""
  batch, _, height, width = images.shape
  grid = coordinate_grid_t(height, width).view(1, -1, 2).expand(batch, -1, -1)
  warped = tps_warp_coordinates_t(affine, control_points, weights, grid)
  return F.grid_sample(
    images, warped.view(batch, height, width, 2), padding_mode="reflection", align_corners=False
  )


def gaussian_heatmaps_t(
  keypoints: torch.Tensor, shape: tuple[int, ...], variance: float
) -> torch.Tensor:
  """The reference's kp2gaussian on a (D, H, W) grid: (B, K, 3) -> (B, K, D, H, W)."""
  axes = [2 * (torch.arange(n, dtype=torch.float32) / (n - 1)) - 1 for n in shape]
  z, y, x = torch.meshgrid(*axes, indexing="ij")
  grid = torch.stack([x, y, z], dim=-1)  # (D, H, W, 3)
  centred = grid[None, None] - keypoints[:, :, None, None, None, :]
  return torch.exp(-0.5 * (centred**2).sum(-1) / variance)


def rotation_matrix_t(
  yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor, pi: float
) -> torch.Tensor:
  """The reference's get_rotation_matrix (degrees, R = P Y R), written from architecture.md 6.2."""
  yaw, pitch, roll = (a / 180 * pi for a in (yaw, pitch, roll))
  one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
  pitch_m = torch.stack(
    [one, zero, zero, zero, pitch.cos(), -pitch.sin(), zero, pitch.sin(), pitch.cos()], -1
  ).view(-1, 3, 3)
  yaw_m = torch.stack(
    [yaw.cos(), zero, yaw.sin(), zero, one, zero, -yaw.sin(), zero, yaw.cos()], -1
  ).view(-1, 3, 3)
  roll_m = torch.stack(
    [roll.cos(), -roll.sin(), zero, roll.sin(), roll.cos(), zero, zero, zero, one], -1
  ).view(-1, 3, 3)
  return pitch_m @ yaw_m @ roll_m
