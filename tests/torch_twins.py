"""PyTorch twins of the reference networks, written from architecture.md (plain torch.nn).

Attribute names reproduce the reference's state_dict keys. Widths are parameters so tests can run
reduced sizes; the defaults are vox-256's. BatchNorm is torch's (SyncBN falls back to it on one
device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_oracles import antialias_t


def coordinate_grid_3d(depth: int, height: int, width: int) -> torch.Tensor:
  """(D, H, W, 3) grid over [-1, 1] inclusive, last axis (x, y, z)."""
  axes = [2 * (torch.arange(n, dtype=torch.float32) / (n - 1)) - 1 for n in (depth, height, width)]
  z, y, x = torch.meshgrid(*axes, indexing="ij")
  return torch.stack([x, y, z], dim=-1)


class DownBlock2d(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 3, padding=1)
    self.norm = nn.BatchNorm2d(cout)
    self.pool = nn.AvgPool2d(2)

  def forward(self, x):
    return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv3d(cin, cout, 3, padding=1)
    self.norm = nn.BatchNorm3d(cout)
    self.pool = nn.AvgPool3d((1, 2, 2))

  def forward(self, x):
    return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv3d(cin, cout, 3, padding=1)
    self.norm = nn.BatchNorm3d(cout)

  def forward(self, x):
    x = F.interpolate(x, scale_factor=(1, 2, 2))
    return F.relu(self.norm(self.conv(x)))


class ResBottleneck(nn.Module):
  def __init__(self, features, stride):
    super().__init__()
    inner = features // 4
    self.conv1 = nn.Conv2d(features, inner, 1)
    self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1)
    self.conv3 = nn.Conv2d(inner, features, 1)
    self.norm1 = nn.BatchNorm2d(inner)
    self.norm2 = nn.BatchNorm2d(inner)
    self.norm3 = nn.BatchNorm2d(features)
    self.stride = stride
    if stride != 1:
      self.skip = nn.Conv2d(features, features, 1, stride=stride)
      self.norm4 = nn.BatchNorm2d(features)

  def forward(self, x):
    out = F.relu(self.norm1(self.conv1(x)))
    out = F.relu(self.norm2(self.conv2(out)))
    out = self.norm3(self.conv3(out))
    if self.stride != 1:
      x = self.norm4(self.skip(x))
    return F.relu(out + x)


class KPHourglass(nn.Module):
  def __init__(
    self, block_expansion, in_features, reshape_features, reshape_depth, num_blocks, max_features
  ):
    super().__init__()
    self.down_blocks = nn.Sequential()
    for i in range(num_blocks):
      cin = in_features if i == 0 else min(max_features, block_expansion * 2**i)
      cout = min(max_features, block_expansion * 2 ** (i + 1))
      self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, cout))
    cin = min(max_features, block_expansion * 2**num_blocks)
    self.conv = nn.Conv2d(cin, reshape_features, 1)
    self.up_blocks = nn.Sequential()
    for i in range(num_blocks):
      cin = (
        reshape_features // reshape_depth
        if i == 0
        else min(max_features, block_expansion * 2 ** (num_blocks - i))
      )
      cout = min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
      self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
    self.reshape_depth = reshape_depth

  def forward(self, x):
    out = self.conv(self.down_blocks(x))
    b, c, h, w = out.shape
    out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)
    return self.up_blocks(out)


class KPDetector(nn.Module):
  def __init__(
    self,
    block_expansion=32,
    num_kp=15,
    image_channel=3,
    max_features=1024,
    reshape_channel=16384,
    reshape_depth=16,
    num_blocks=5,
    temperature=0.1,
    scale_factor=0.25,
  ):
    super().__init__()
    self.predictor = KPHourglass(
      block_expansion, image_channel, reshape_channel, reshape_depth, num_blocks, max_features
    )
    self.kp = nn.Conv3d(block_expansion, num_kp, 3, padding=1)
    self.temperature = temperature
    self.scale_factor = scale_factor
    if scale_factor != 1:
      self.down = nn.Module()
      size = 2 * round((1 / scale_factor - 1) / 2 * 4) + 1
      self.down.register_buffer("weight", torch.zeros(image_channel, 1, size, size))

  def forward(self, x):
    if self.scale_factor != 1:
      x = antialias_t(x, self.scale_factor)
    prediction = self.kp(self.predictor(x))  # (B, K, D, h, w)
    shape = prediction.shape
    heatmap = F.softmax(prediction.view(shape[0], shape[1], -1) / self.temperature, dim=2).view(
      *shape
    )
    grid = coordinate_grid_3d(*shape[2:])
    value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))
    return {"value": value, "heatmap": heatmap}


class HEEstimator(nn.Module):
  """Reference HEEstimator, with its head naming: ``yaw`` comes from ``fc_roll`` and vice versa."""

  def __init__(
    self,
    block_expansion=64,
    widths=(256, 512, 1024, 2048),
    blocks=(3, 3, 5, 2),
    num_kp=15,
    num_bins=66,
  ):
    super().__init__()
    self.conv1 = nn.Conv2d(3, block_expansion, 7, stride=2, padding=3)
    self.norm1 = nn.BatchNorm2d(block_expansion)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    previous = block_expansion
    block_index = 1
    for stage, (width, count) in enumerate(zip(widths, blocks)):
      setattr(self, f"conv{stage + 2}", nn.Conv2d(previous, width, 1))
      setattr(self, f"norm{stage + 2}", nn.BatchNorm2d(width))
      if stage > 0:
        setattr(self, f"block{block_index}", ResBottleneck(width, 2))
        block_index += 1
      stack = nn.Sequential()
      for i in range(count):
        stack.add_module(f"b{block_index}_{i}", ResBottleneck(width, 1))
      setattr(self, f"block{block_index}", stack)
      block_index += 1
      previous = width
    self.num_stages = len(widths)
    self.fc_roll = nn.Linear(previous, num_bins)
    self.fc_pitch = nn.Linear(previous, num_bins)
    self.fc_yaw = nn.Linear(previous, num_bins)
    self.fc_t = nn.Linear(previous, 3)
    self.fc_exp = nn.Linear(previous, 3 * num_kp)

  def forward(self, x):
    out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
    block_index = 1
    for stage in range(self.num_stages):
      out = F.relu(getattr(self, f"norm{stage + 2}")(getattr(self, f"conv{stage + 2}")(out)))
      if stage > 0:
        out = getattr(self, f"block{block_index}")(out)
        block_index += 1
      out = getattr(self, f"block{block_index}")(out)
      block_index += 1
    out = out.mean(dim=(2, 3))
    return {
      "yaw": self.fc_roll(out),  # the reference's naming bug (its issue #58)
      "pitch": self.fc_pitch(out),
      "roll": self.fc_yaw(out),
      "t": self.fc_t(out),
      "exp": self.fc_exp(out),
    }


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
  """Gives every BatchNorm non-trivial affine parameters and running statistics."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for layer in module.modules():
      if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        n = layer.num_features
        layer.weight.copy_(0.5 + torch.rand(n, generator=generator))
        layer.bias.copy_(0.2 * torch.randn(n, generator=generator))
        layer.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
        layer.running_var.copy_(0.5 + torch.rand(n, generator=generator))
  return module
