"""PyTorch definitions of the reference networks, written from architecture.md (plain torch.nn,
no torchvision), used as the independent oracle for the Flax ports: by the tests and by
``tools/convert_torch_weights.py --verify``.

Attribute names reproduce the upstream state_dict keys, so ``load_state_dict`` takes the upstream
files. Widths are parameters so tests can run reduced sizes; the defaults are vox-256's. BatchNorm
is torch's (the reference's SyncBN falls back to it on one device). Needs the ``convert`` extra.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def antialias_t(x: torch.Tensor, scale: float) -> torch.Tensor:
  """The reference's AntiAliasInterpolation2d steps (architecture.md 2.9) on an NCHW tensor."""
  if scale == 1:
    return x
  channels = x.shape[1]
  sigma = (1 / scale - 1) / 2
  size = 2 * round(sigma * 4) + 1
  coords = torch.arange(size, dtype=torch.float32, device=x.device)
  rows, cols = torch.meshgrid(coords, coords, indexing="ij")
  kernel = torch.ones(size, size, device=x.device)
  for grid in (rows, cols):
    kernel = kernel * torch.exp(-((grid - (size - 1) / 2) ** 2) / (2 * sigma**2))
  kernel = (kernel / kernel.sum()).view(1, 1, size, size).repeat(channels, 1, 1, 1)
  half = size // 2
  out = F.conv2d(F.pad(x, (half, half, half, half)), kernel.to(x.dtype), groups=channels)
  step = int(1 / scale)
  return out[:, :, ::step, ::step]


def coordinate_grid_3d(depth: int, height: int, width: int, device=None) -> torch.Tensor:
  """(D, H, W, 3) grid over [-1, 1] inclusive, last axis (x, y, z), on ``device``."""
  axes = [
    2 * (torch.arange(n, dtype=torch.float32, device=device) / (n - 1)) - 1
    for n in (depth, height, width)
  ]
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
    grid = coordinate_grid_3d(*shape[2:], device=x.device)
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

  def stage_maps(self, x):
    """Stem and bottleneck stages: every stage's output (B, widths[s], h, w)."""
    out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
    block_index = 1
    maps = []
    for stage in range(self.num_stages):
      out = F.relu(getattr(self, f"norm{stage + 2}")(getattr(self, f"conv{stage + 2}")(out)))
      if stage > 0:
        out = getattr(self, f"block{block_index}")(out)
        block_index += 1
      out = getattr(self, f"block{block_index}")(out)
      block_index += 1
      maps.append(out)
    return maps

  def trunk(self, x):
    """Stem, bottleneck stages and global average pooling: (B, widths[-1])."""
    return self.stage_maps(x)[-1].mean(dim=(2, 3))

  def forward(self, x):
    out = self.trunk(x)
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


class HopenetBottleneck(nn.Module):
  def __init__(self, cin, width, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.downsample = None
    if downsample:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, width * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(width * 4)
      )

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Hopenet(nn.Module):
  """torchvision-layout ResNet-50 with three 66-bin heads and the unused fc_finetune."""

  def __init__(self, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), num_bins=66):
    super().__init__()
    self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = widths[0]
    for index, (count, width) in enumerate(zip(layers, widths), start=1):
      blocks = []
      for b in range(count):
        stride = 2 if b == 0 and index > 1 else 1
        blocks.append(HopenetBottleneck(cin, width, stride, downsample=b == 0))
        cin = width * 4
      setattr(self, f"layer{index}", nn.Sequential(*blocks))
    self.avgpool = nn.AvgPool2d(7)
    self.fc_yaw = nn.Linear(cin, num_bins)
    self.fc_pitch = nn.Linear(cin, num_bins)
    self.fc_roll = nn.Linear(cin, num_bins)
    self.fc_finetune = nn.Linear(cin + 3, 3)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    for index in range(1, 5):
      x = getattr(self, f"layer{index}")(x)
    x = self.avgpool(x).flatten(1)
    return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)


def hopenet_input(images_nchw):
  """Resize to 224 (bilinear, align_corners False, no antialias) and ImageNet-normalise."""
  x = F.interpolate(images_nchw, size=(224, 224), mode="bilinear", align_corners=False)
  mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
  return (x - mean) / std


class ScaleTranslationHead(HEEstimator):
  """MMFA's head (mmfa_delta 3): the HEEstimator trunk with fc_t and fc_scale (s = exp).

  ``translation='heatmap'``: x and y also get the expected position under the softmax, over all
  positions, of a 1x1 convolution (``translation_map``, a Linear over channels) of stage ``heatmap_stage``'s output, the
  positions at ``-1 + 2 i / (n - 1)`` along each axis. ``scale='heatmap'``: the scale is also
  multiplied by the spread of a second such map's softmax (``scale_map``: the root of the mean of
  the x and y variances of the positions under it) over that of a uniform map."""

  def __init__(
    self,
    block_expansion=64,
    widths=(256, 512, 1024, 2048),
    blocks=(3, 3, 5, 2),
    translation="pooled",
    heatmap_stage=1,
    scale="pooled",
  ):
    super().__init__(block_expansion, widths, blocks)
    for name in ("fc_roll", "fc_pitch", "fc_yaw", "fc_exp"):
      delattr(self, name)
    self.fc_scale = nn.Linear(widths[-1], 1)
    self.heatmap_stage = heatmap_stage if "heatmap" in (translation, scale) else None
    if translation == "heatmap":
      self.translation_map = nn.Linear(widths[heatmap_stage], 1)  # a 1x1 convolution
    if scale == "heatmap":
      self.scale_map = nn.Linear(widths[heatmap_stage], 1)

  def forward(self, x):
    maps = self.stage_maps(x)
    out = maps[-1].mean(dim=(2, 3))
    translation = self.fc_t(out)
    scale = torch.exp(self.fc_scale(out)[:, 0])
    if self.heatmap_stage is None:
      return {"scale": scale, "translation": translation}
    stage_map = maps[self.heatmap_stage].permute(0, 2, 3, 1)  # (B, h, w, C)
    ys = torch.linspace(-1, 1, stage_map.shape[1])
    xs = torch.linspace(-1, 1, stage_map.shape[2])

    def moments(linear):  # means and variances of x and y under the map's softmax, (B,) each
      logits = linear(stage_map)[..., 0]  # (B, h, w)
      weights = torch.softmax(logits.flatten(1), dim=1).view_as(logits)
      along_x, along_y = weights.sum(dim=1), weights.sum(dim=2)  # (B, w), (B, h)
      mean_x, mean_y = (along_x * xs).sum(dim=1), (along_y * ys).sum(dim=1)
      var_x = (along_x * (xs - mean_x[:, None]) ** 2).sum(dim=1)
      var_y = (along_y * (ys - mean_y[:, None]) ** 2).sum(dim=1)
      return mean_x, mean_y, var_x, var_y

    if hasattr(self, "translation_map"):
      centre_x, centre_y, _, _ = moments(self.translation_map)
      translation = translation + torch.stack([centre_x, centre_y, torch.zeros_like(centre_x)], 1)
    if hasattr(self, "scale_map"):
      _, _, var_x, var_y = moments(self.scale_map)
      uniform = 0.5 * (xs.var(unbiased=False) + ys.var(unbiased=False))
      scale = scale * torch.sqrt(0.5 * (var_x + var_y) / uniform)
    return {"scale": scale, "translation": translation}


class ExpressionEncoder(nn.Module):
  """mmfa_delta 4 table: stem, two bottleneck stages, two strided bottlenecks, Linear."""

  def __init__(self, stem=64, widths=(256, 512), latent_dim=128, map_size=4):
    super().__init__()
    self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
    self.norm1 = nn.BatchNorm2d(stem)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.conv2 = nn.Conv2d(stem, widths[0], 1)
    self.norm2 = nn.BatchNorm2d(widths[0])
    self.block1_0 = ResBottleneck(widths[0], 2)
    self.block1_1 = ResBottleneck(widths[0], 1)
    self.conv3 = nn.Conv2d(widths[0], widths[1], 1)
    self.norm3 = nn.BatchNorm2d(widths[1])
    self.block2_0 = ResBottleneck(widths[1], 2)
    self.block2_1 = ResBottleneck(widths[1], 1)
    self.block3 = ResBottleneck(widths[1], 2)
    self.block4 = ResBottleneck(widths[1], 2)
    self.fc = nn.Linear(widths[1] * map_size * map_size, latent_dim)

  def forward(self, x):
    x = self.maxpool(F.relu(self.norm1(self.conv1(x))))
    x = F.relu(self.norm2(self.conv2(x)))
    x = self.block1_1(self.block1_0(x))
    x = F.relu(self.norm3(self.conv3(x)))
    x = self.block4(self.block3(self.block2_1(self.block2_0(x))))
    return self.fc(x.flatten(1))


class ExpressionDecoder(nn.Module):
  """mmfa_delta 5: concat(latent, flat canonical kp) -> [Linear, BN1d, ReLU] x n -> Linear."""

  def __init__(self, latent_dim=128, num_kp=15, hidden=(256, 256, 256)):
    super().__init__()
    previous = latent_dim + 3 * num_kp
    for i, width in enumerate(hidden):
      setattr(self, f"fc{i}", nn.Linear(previous, width))
      setattr(self, f"norm{i}", nn.BatchNorm1d(width))
      previous = width
    self.num_hidden = len(hidden)
    self.fc_out = nn.Linear(previous, 3 * num_kp)

  def forward(self, latent, canonical_kp):
    x = torch.cat([latent, canonical_kp.flatten(1)], dim=1)
    for i in range(self.num_hidden):
      x = F.relu(getattr(self, f"norm{i}")(getattr(self, f"fc{i}")(x)))
    return self.fc_out(x).view(canonical_kp.shape)


class HourglassEncoder(nn.Module):
  def __init__(self, block_expansion, in_features, num_blocks, max_features):
    super().__init__()
    self.down_blocks = nn.ModuleList(
      DownBlock3d(
        in_features if i == 0 else min(max_features, block_expansion * 2**i),
        min(max_features, block_expansion * 2 ** (i + 1)),
      )
      for i in range(num_blocks)
    )

  def forward(self, x):
    outs = [x]
    for block in self.down_blocks:
      outs.append(block(outs[-1]))
    return outs


class HourglassDecoder(nn.Module):
  def __init__(self, block_expansion, in_features, num_blocks, max_features):
    super().__init__()
    blocks = []
    for i in reversed(range(num_blocks)):
      cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
      blocks.append(UpBlock3d(cin, min(max_features, block_expansion * 2**i)))
    self.up_blocks = nn.ModuleList(blocks)
    out = block_expansion + in_features
    self.conv = nn.Conv3d(out, out, 3, padding=1)
    self.norm = nn.BatchNorm3d(out)

  def forward(self, skips):
    out = skips.pop()
    for block in self.up_blocks:
      out = torch.cat([block(out), skips.pop()], dim=1)
    return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
  def __init__(self, block_expansion, in_features, num_blocks, max_features):
    super().__init__()
    self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
    self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)

  def forward(self, x):
    return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
  """architecture.md 7.2, steps 1-9."""

  def __init__(
    self,
    block_expansion=32,
    num_blocks=5,
    max_features=1024,
    num_kp=15,
    feature_channel=32,
    reshape_depth=16,
    compress=4,
  ):
    super().__init__()
    in_features = (num_kp + 1) * (compress + 1)
    self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features)
    out = block_expansion + in_features
    self.mask = nn.Conv3d(out, num_kp + 1, 7, padding=3)
    self.compress = nn.Conv3d(feature_channel, compress, 1)
    self.norm = nn.BatchNorm3d(compress)
    self.occlusion = nn.Conv2d(out * reshape_depth, 1, 7, padding=3)

  def forward(self, feature, kp_driving, kp_source):
    feature = F.relu(self.norm(self.compress(feature)))
    bs, _, d, h, w = feature.shape
    num_kp = kp_source.shape[1]
    heat = gaussian_heatmap(kp_driving, (d, h, w)) - gaussian_heatmap(kp_source, (d, h, w))
    heat = torch.cat([heat.new_zeros(bs, 1, d, h, w), heat], dim=1).unsqueeze(2)
    grid = coordinate_grid_3d(d, h, w, device=feature.device)
    to_source = (
      grid[None, None] - kp_driving[:, :, None, None, None] + kp_source[:, :, None, None, None]
    )
    motions = torch.cat([grid[None, None].repeat(bs, 1, 1, 1, 1, 1), to_source], dim=1)
    repeated = (
      feature.unsqueeze(1).repeat(1, num_kp + 1, 1, 1, 1, 1).view(bs * (num_kp + 1), -1, d, h, w)
    )
    deformed = F.grid_sample(
      repeated, motions.view(bs * (num_kp + 1), d, h, w, 3), align_corners=False
    )
    deformed = deformed.view(bs, num_kp + 1, -1, d, h, w)
    prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(bs, -1, d, h, w))
    mask = F.softmax(self.mask(prediction), dim=1)
    deformation = (
      (motions.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(1).permute(0, 2, 3, 4, 1)
    )
    occlusion = torch.sigmoid(self.occlusion(prediction.view(bs, -1, h, w)))
    return {
      "mask": mask,
      "deformation": deformation,
      "occlusion_map": occlusion,
      "sparse_motion": motions,
    }


def gaussian_heatmap(kp, shape, variance=0.01):
  grid = coordinate_grid_3d(*shape, device=kp.device)
  return torch.exp(-0.5 * ((grid[None, None] - kp[:, :, None, None, None]) ** 2).sum(-1) / variance)


class UpBlock2d(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 3, padding=1)
    self.norm = nn.BatchNorm2d(cout)

  def forward(self, x):
    return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class SameBlock2d(nn.Module):
  def __init__(self, cin, cout, kernel_size=3, padding=1, lrelu=False):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
    self.norm = nn.BatchNorm2d(cout)
    self.act = nn.LeakyReLU() if lrelu else nn.ReLU()

  def forward(self, x):
    return self.act(self.norm(self.conv(x)))


class ResBlock(nn.Module):
  """ResBlock2d / ResBlock3d: pre-activation, identity shortcut."""

  def __init__(self, features, ndim):
    super().__init__()
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if ndim == 2 else (nn.Conv3d, nn.BatchNorm3d)
    self.conv1 = conv(features, features, 3, padding=1)
    self.conv2 = conv(features, features, 3, padding=1)
    self.norm1 = norm(features)
    self.norm2 = norm(features)

  def forward(self, x):
    out = self.conv1(F.relu(self.norm1(x)))
    return self.conv2(F.relu(self.norm2(out))) + x


# ---- Networks II: generators, discriminator, perceptual networks, expression VAE ----

SN = nn.utils.spectral_norm


class AppearanceFront(nn.Module):
  """first, down_blocks, second, resblocks_3d, dense motion, third, fourth (architecture.md 7.1-7.3)."""

  def __init__(
    self,
    block_expansion=64,
    max_features=512,
    num_down_blocks=2,
    reshape_channel=32,
    reshape_depth=16,
    num_resblocks=6,
    first_kernel=7,
    num_kp=15,
    dense_motion=None,
  ):
    super().__init__()
    self.first = SameBlock2d(3, block_expansion, first_kernel, first_kernel // 2)
    self.down_blocks = nn.ModuleList(
      DownBlock2d(
        min(max_features, block_expansion * 2**i), min(max_features, block_expansion * 2 ** (i + 1))
      )
      for i in range(num_down_blocks)
    )
    out_features = block_expansion * 2**num_down_blocks
    self.second = nn.Conv2d(out_features, max_features, 1)
    self.resblocks_3d = nn.Sequential()
    for i in range(num_resblocks):
      self.resblocks_3d.add_module(f"3dr{i}", ResBlock(reshape_channel, 3))
    self.dense_motion_network = DenseMotionNetwork(
      num_kp=num_kp,
      feature_channel=reshape_channel,
      reshape_depth=reshape_depth,
      **(dense_motion or {}),
    )
    self.third = SameBlock2d(max_features, out_features, 3, 1, lrelu=True)
    self.fourth = nn.Conv2d(out_features, out_features, 1)
    self.reshape_channel, self.reshape_depth = reshape_channel, reshape_depth

  def front(self, source, kp_source, kp_driving):
    out = self.first(source)
    for block in self.down_blocks:
      out = block(out)
    out = self.second(out)
    bs, _, h, w = out.shape
    feature_3d = self.resblocks_3d(out.view(bs, self.reshape_channel, self.reshape_depth, h, w))
    motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
    out = F.grid_sample(feature_3d, motion["deformation"], align_corners=False)
    bs, c, d, h, w = out.shape
    out = self.fourth(self.third(out.view(bs, c * d, h, w)))
    return out * motion["occlusion_map"], motion


class OcclusionAwareGenerator(AppearanceFront):
  def __init__(self, block_expansion=64, num_down_blocks=2, num_resblocks=6, **kwargs):
    super().__init__(
      block_expansion=block_expansion,
      num_down_blocks=num_down_blocks,
      num_resblocks=num_resblocks,
      **kwargs,
    )
    out_features = block_expansion * 2**num_down_blocks
    self.resblocks_2d = nn.Sequential()
    for i in range(num_resblocks):
      self.resblocks_2d.add_module(f"2dr{i}", ResBlock(out_features, 2))
    self.up_blocks = nn.ModuleList(
      UpBlock2d(
        max(block_expansion, block_expansion * 2 ** (num_down_blocks - i)),
        max(block_expansion, block_expansion * 2 ** (num_down_blocks - i - 1)),
      )
      for i in range(num_down_blocks)
    )
    self.final = nn.Conv2d(block_expansion, 3, 7, padding=3)

  def forward(self, source, kp_source, kp_driving):
    out, motion = self.front(source, kp_source, kp_driving)
    out = self.resblocks_2d(out)
    for block in self.up_blocks:
      out = block(out)
    return dict(motion, prediction=torch.sigmoid(self.final(out)))


class SPADE(nn.Module):
  def __init__(self, norm_nc, label_nc, hidden=128):
    super().__init__()
    self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
    self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
    self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
    self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

  def forward(self, x, segmap):
    normalized = self.param_free_norm(x)
    segmap = F.interpolate(segmap, size=x.size()[2:], mode="nearest")
    actv = self.mlp_shared(segmap)
    return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
  def __init__(self, fin, fout, label_nc):
    super().__init__()
    self.learned_shortcut = fin != fout
    fmiddle = min(fin, fout)
    self.conv_0 = SN(nn.Conv2d(fin, fmiddle, 3, padding=1))
    self.conv_1 = SN(nn.Conv2d(fmiddle, fout, 3, padding=1))
    if self.learned_shortcut:
      self.conv_s = SN(nn.Conv2d(fin, fout, 1, bias=False))
      self.norm_s = SPADE(fin, label_nc)
    self.norm_0 = SPADE(fin, label_nc)
    self.norm_1 = SPADE(fmiddle, label_nc)

  def forward(self, x, seg):
    x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
    dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
    dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
    return x_s + dx


class SPADEDecoder(nn.Module):
  def __init__(self, ic=256, oc=64, num_middle=6):
    super().__init__()
    self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
    for i in range(num_middle):
      setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic))
    self.num_middle = num_middle
    self.up_0 = SPADEResnetBlock(2 * ic, ic, ic)
    self.up_1 = SPADEResnetBlock(ic, oc, ic)
    self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)

  def forward(self, feature):
    seg = feature
    x = self.fc(feature)
    for i in range(self.num_middle):
      x = getattr(self, f"G_middle_{i}")(x, seg)
    x = self.up_0(F.interpolate(x, scale_factor=2), seg)
    x = self.up_1(F.interpolate(x, scale_factor=2), seg)
    return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class SPADEGenerator(AppearanceFront):
  def __init__(self, block_expansion=64, num_down_blocks=2, **kwargs):
    super().__init__(
      block_expansion=block_expansion, num_down_blocks=num_down_blocks, first_kernel=3, **kwargs
    )
    self.decoder = SPADEDecoder(ic=block_expansion * 2**num_down_blocks, oc=block_expansion)

  def forward(self, source, kp_source, kp_driving):
    out, motion = self.front(source, kp_source, kp_driving)
    return dict(motion, prediction=self.decoder(out))


class MultiScaleGenerator(AppearanceFront):
  """mmfa_delta 6 table, written from the table."""

  def __init__(self, block_expansion=64, num_down_blocks=2, num_resblocks=6, **kwargs):
    super().__init__(
      block_expansion=block_expansion,
      num_down_blocks=num_down_blocks,
      num_resblocks=num_resblocks,
      **kwargs,
    )
    n = num_down_blocks
    width = block_expansion * 2**n
    self.resblocks_2d = nn.Sequential()
    for i in range(num_resblocks):
      self.resblocks_2d.add_module(f"2dr{i}", ResBlock(width, 2))
    self.up_blocks = nn.ModuleList()
    for i in range(n):
      out = max(block_expansion, block_expansion * 2 ** (n - i - 1))
      self.up_blocks.append(UpBlock2d(width + 3, out))
      setattr(self, f"to_image_{i}", nn.Conv2d(width, 3, 3, padding=1))
      stage = nn.Sequential()
      stage.add_module("2dr0", ResBlock(out, 2))
      setattr(self, f"stage_resblocks_up{i + 1}", stage)
      width = out
    self.final = nn.Conv2d(width, 3, 7, padding=3)
    self.n = n

  def forward(self, source, kp_source, kp_driving):
    x, motion = self.front(source, kp_source, kp_driving)
    x = self.resblocks_2d(x)
    predictions = {}
    for stage in range(self.n + 1):
      if stage > 0:
        x = getattr(self, f"stage_resblocks_up{stage}")(x)
      head = self.final if stage == self.n else getattr(self, f"to_image_{stage}")
      image = torch.sigmoid(head(x))
      predictions[image.shape[-1]] = image
      if stage < self.n:
        x = self.up_blocks[stage](torch.cat([x, image], dim=1))
    return dict(motion, prediction=image, predictions=predictions)


class DiscriminatorBlock(nn.Module):
  def __init__(self, cin, cout, norm, pool):
    super().__init__()
    self.conv = SN(nn.Conv2d(cin, cout, 4))
    self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else None
    self.pool = pool

  def forward(self, x):
    out = self.conv(x)
    if self.norm is not None:
      out = self.norm(out)
    out = F.leaky_relu(out, 0.2)
    return F.avg_pool2d(out, (2, 2)) if self.pool else out


class Discriminator(nn.Module):
  def __init__(self, block_expansion=32, num_blocks=4, max_features=512):
    super().__init__()
    self.down_blocks = nn.ModuleList(
      DiscriminatorBlock(
        3 if i == 0 else min(max_features, block_expansion * 2**i),
        min(max_features, block_expansion * 2 ** (i + 1)),
        norm=i != 0,
        pool=i != num_blocks - 1,
      )
      for i in range(num_blocks)
    )
    self.conv = SN(nn.Conv2d(min(max_features, block_expansion * 2**num_blocks), 1, 1))

  def forward(self, x):
    feature_maps = []
    for block in self.down_blocks:
      x = block(x)
      feature_maps.append(x)
    return feature_maps, self.conv(x)


class MultiScaleDiscriminator(nn.Module):
  def __init__(self, scales=(1,), **kwargs):
    super().__init__()
    self.discs = nn.ModuleDict({str(s).replace(".", "-"): Discriminator(**kwargs) for s in scales})

  def forward(self, images):
    return {key: disc(images[key]) for key, disc in self.discs.items()}


def vgg19_features():
  """torchvision vgg19().features layout up to relu5_1 (index 29)."""
  layers, cin = [], 3
  for block, count in enumerate((2, 2, 4, 4, 1)):
    if block > 0:
      layers.append(nn.MaxPool2d(2, 2))
    width = (64, 128, 256, 512, 512)[block]
    for _ in range(count):
      layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
      cin = width
  return nn.Sequential(*layers)


class VGG19(nn.Module):
  TAPS = (1, 6, 11, 20, 29)

  def __init__(self):
    super().__init__()
    self.features = vgg19_features()
    self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

  def forward(self, x):
    x = (x - self.mean) / self.std
    taps = []
    for index, layer in enumerate(self.features):
      x = layer(x)
      if index in self.TAPS:
        taps.append(x)
    return taps


class VGGFaceDag(nn.Module):
  """vgg_face_dag layout (architecture.md 11.2): named convs and fc6-8."""

  def __init__(self):
    super().__init__()
    cin = 3
    for block, count in enumerate((2, 2, 3, 3, 3), start=1):
      width = (64, 128, 256, 512, 512)[block - 1]
      for j in range(1, count + 1):
        setattr(self, f"conv{block}_{j}", nn.Conv2d(cin, width, 3, padding=1))
        cin = width
    self.fc6 = nn.Linear(25088, 4096)
    self.fc7 = nn.Linear(4096, 4096)
    self.fc8 = nn.Linear(4096, 2622)

  def forward(self, x):
    mean = [129.186279296875, 104.76238250732422, 93.59396362304688]
    x = x * 255 - torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    taps = []
    for block, count in enumerate((2, 2, 3, 3, 1), start=1):
      if block > 1:
        x = F.max_pool2d(x, 2, 2)
      for j in range(1, count + 1):
        x = F.relu(getattr(self, f"conv{block}_{j}")(x))
        if j == 1:
          taps.append(x)
    return taps


class MLP(nn.Module):
  def __init__(self, sizes, spectral=False):
    super().__init__()
    wrap = SN if spectral else (lambda m: m)
    for i in range(len(sizes) - 2):
      setattr(self, f"hidden_{i}", wrap(nn.Linear(sizes[i], sizes[i + 1])))
    self.out = wrap(nn.Linear(sizes[-2], sizes[-1]))
    self.num_hidden = len(sizes) - 2

  def forward(self, x):
    for i in range(self.num_hidden):
      x = F.leaky_relu(getattr(self, f"hidden_{i}")(x), 0.2)
    return self.out(x)


class ExpressionVAE(nn.Module):
  def __init__(self, feature_dim=128, latent_dim=32, hidden=(256, 256)):
    super().__init__()
    self.encoder = MLP((feature_dim, *hidden, 2 * latent_dim))
    self.decoder = MLP((latent_dim, *hidden, feature_dim))
    self.latent_dim = latent_dim

  def forward(self, features, noise):
    stats = self.encoder(features)
    mean, log_var = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
    latent = mean + torch.exp(0.5 * log_var) * noise
    return {
      "mean": mean,
      "log_var": log_var,
      "latent": latent,
      "reconstruction": self.decoder(latent),
    }


def settle_spectral_norm(module: nn.Module, *inputs, steps: int = 5) -> nn.Module:
  """Runs training-mode forwards so every spectral norm's u, v come from power iterations."""
  module.train()
  with torch.no_grad():
    for _ in range(steps):
      module(*inputs)
  return module


# ---- Whole face-vid2vid model from a config (used by --verify and the tests) ----


def face_vid2vid_modules(model_config, generator_kind: str = "spade") -> dict:
  """``{kp_detector, he_estimator, generator, discriminator}`` PyTorch modules shaped by a
  mmfa_jax config's ``model`` section (the reference's checkpoint entries)."""
  kp = model_config.kp_detector
  he = model_config.he_estimator
  gen = model_config.generator
  dense = model_config.dense_motion
  disc = model_config.discriminator
  generator_cls = SPADEGenerator if generator_kind == "spade" else OcclusionAwareGenerator
  generator_kwargs = dict(
    block_expansion=gen.block_expansion,
    max_features=gen.max_features,
    num_down_blocks=gen.num_down_blocks,
    reshape_channel=gen.reshape_channels,
    reshape_depth=gen.reshape_depth,
    num_resblocks=gen.num_resblocks,
    num_kp=model_config.num_kp,
    dense_motion=dict(
      block_expansion=dense.block_expansion,
      num_blocks=dense.num_blocks,
      max_features=dense.max_features,
      compress=dense.compress,
    ),
  )
  return {
    "kp_detector": KPDetector(
      block_expansion=kp.block_expansion,
      num_kp=model_config.num_kp,
      max_features=kp.max_features,
      reshape_channel=kp.reshape_channels,
      reshape_depth=kp.reshape_depth,
      num_blocks=kp.num_blocks,
      temperature=kp.temperature,
      scale_factor=kp.scale_factor,
    ),
    "he_estimator": HEEstimator(
      block_expansion=he.block_expansion,
      widths=tuple(he.widths),
      blocks=tuple(he.blocks),
      num_kp=model_config.num_kp,
      num_bins=he.num_bins,
    ),
    "generator": generator_cls(**generator_kwargs),
    "discriminator": MultiScaleDiscriminator(
      scales=tuple(int(s) if float(s).is_integer() else s for s in disc.scales),
      block_expansion=disc.block_expansion,
      num_blocks=disc.num_blocks,
      max_features=disc.max_features,
    ),
  }


def _angles(logits):
  return (
    torch.softmax(logits, -1)
    * torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
  ).sum(-1) * 3 - 99


def reference_rotation(yaw, pitch, roll):
  """architecture.md 6.2: degrees, pi = 3.14, R = R_pitch(x) R_yaw(y) R_roll(z)."""
  yaw, pitch, roll = (a / 180 * 3.14 for a in (yaw, pitch, roll))
  one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
  pitch_m = torch.stack(
    [one, zero, zero, zero, pitch.cos(), -pitch.sin(), zero, pitch.sin(), pitch.cos()], -1
  )
  yaw_m = torch.stack(
    [yaw.cos(), zero, yaw.sin(), zero, one, zero, -yaw.sin(), zero, yaw.cos()], -1
  )
  roll_m = torch.stack(
    [roll.cos(), -roll.sin(), zero, roll.sin(), roll.cos(), zero, zero, zero, one], -1
  )
  return pitch_m.view(-1, 3, 3) @ yaw_m.view(-1, 3, 3) @ roll_m.view(-1, 3, 3)


def animate_face_vid2vid(
  modules: dict, source: torch.Tensor, driving: torch.Tensor
) -> torch.Tensor:
  """The reference's animation of NCHW ``source`` by ``driving`` (absolute keypoints): NCHW output."""

  def keypoints(canonical, he):
    rotation = reference_rotation(_angles(he["yaw"]), _angles(he["pitch"]), _angles(he["roll"]))
    rotated = torch.einsum("bij,bkj->bki", rotation, canonical)
    return rotated + he["t"][:, None] + he["exp"].view(canonical.shape)

  canonical = modules["kp_detector"](source)["value"]
  kp_source = keypoints(canonical, modules["he_estimator"](source))
  kp_driving = keypoints(canonical, modules["he_estimator"](driving))
  return modules["generator"](source, kp_source, kp_driving)["prediction"]
