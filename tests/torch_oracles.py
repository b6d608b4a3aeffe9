"""PyTorch (CPU) reference computations shared by the tests. Channels-last in, channels-last out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_channels_first(array: np.ndarray) -> torch.Tensor:
  """(B, *spatial, C) numpy -> (B, C, *spatial) torch tensor."""
  perm = (0, array.ndim - 1, *range(1, array.ndim - 1))
  return torch.from_numpy(np.ascontiguousarray(array)).permute(*perm).contiguous()


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
