"""PyTorch twin of pytorch-fid's FID Inception (``InceptionV3(output_blocks=[3],
use_fid_inception=True)``), written from its published structure in plain ``torch.nn`` (no
torchvision, no pytorch-fid): the independent oracle for ``mmfa_jax.models.inception``.

Attribute names reproduce the keys of ``pt_inception-2015-12-05-6726825d.pth`` (torchvision's
``Inception3(num_classes=1008, aux_logits=False)`` with the FID blocks), so ``load_state_dict``
takes that file strictly; ``fc`` is built for that reason only and never run. NCHW tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FID_NUM_CLASSES = 1008  # rows of the file's unused fc


class BasicConv2d(nn.Module):
  """Conv without bias -> BatchNorm (eps 1e-3) -> ReLU."""

  def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.bn(self.conv(x)))


def _mean_pool_3x3(x: torch.Tensor) -> torch.Tensor:
  """The FID patch: 3x3 stride-1 average whose mean leaves out the zero padding."""
  return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
  def __init__(self, cin: int, pool_features: int):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 64, 1)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
    self.branch_pool = BasicConv2d(cin, pool_features, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    five = self.branch5x5_2(self.branch5x5_1(x))
    double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    pooled = self.branch_pool(_mean_pool_3x3(x))
    return torch.cat([self.branch1x1(x), five, double, pooled], dim=1)


class InceptionB(nn.Module):
  def __init__(self, cin: int):
    super().__init__()
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, 3, stride=2)], dim=1)


class FIDInceptionC(nn.Module):
  def __init__(self, cin: int, channels_7x7: int):
    super().__init__()
    c7 = channels_7x7
    wide, tall = (
      {"kernel_size": (1, 7), "padding": (0, 3)},
      {"kernel_size": (7, 1), "padding": (3, 0)},
    )
    self.branch1x1 = BasicConv2d(cin, 192, 1)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1)
    self.branch7x7_2 = BasicConv2d(c7, c7, **wide)
    self.branch7x7_3 = BasicConv2d(c7, 192, **tall)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, **tall)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, **wide)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, **tall)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, **wide)
    self.branch_pool = BasicConv2d(cin, 192, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    double = x
    for index in range(1, 6):
      double = getattr(self, f"branch7x7dbl_{index}")(double)
    pooled = self.branch_pool(_mean_pool_3x3(x))
    return torch.cat([self.branch1x1(x), single, double, pooled], dim=1)


class InceptionD(nn.Module):
  def __init__(self, cin: int):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(cin, 192, 1)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    three = self.branch3x3_2(self.branch3x3_1(x))
    seven = x
    for index in range(1, 5):
      seven = getattr(self, f"branch7x7x3_{index}")(seven)
    return torch.cat([three, seven, F.max_pool2d(x, 3, stride=2)], dim=1)


class FIDInceptionE(nn.Module):
  """``max_pool=False``: FIDInceptionE_1 (Mixed_7b); ``True``: FIDInceptionE_2 (Mixed_7c)."""

  def __init__(self, cin: int, max_pool: bool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = BasicConv2d(cin, 320, 1)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(cin, 192, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    stem = self.branch3x3_1(x)
    three = torch.cat([self.branch3x3_2a(stem), self.branch3x3_2b(stem)], dim=1)
    stem = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    double = torch.cat([self.branch3x3dbl_3a(stem), self.branch3x3dbl_3b(stem)], dim=1)
    if self.max_pool:
      pooled = F.max_pool2d(x, 3, stride=1, padding=1)
    else:
      pooled = _mean_pool_3x3(x)
    return torch.cat([self.branch1x1(x), three, double, self.branch_pool(pooled)], dim=1)


class FIDInceptionV3(nn.Module):
  """``(B, 3, H, W)`` images in [0, 1] -> ``(B, 2048)`` pool features (pytorch-fid's block 3)."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
    self.Mixed_5b = FIDInceptionA(192, pool_features=32)
    self.Mixed_5c = FIDInceptionA(256, pool_features=64)
    self.Mixed_5d = FIDInceptionA(288, pool_features=64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    self.fc = nn.Linear(2048, FID_NUM_CLASSES)  # in the file, not on the pool-feature path

  @staticmethod
  def prepare(images: torch.Tensor) -> torch.Tensor:
    """Resize to 299 x 299 (bilinear, ``align_corners=False``, no antialias), then ``2 x - 1``."""
    resized = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * resized - 1

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = self.prepare(images)
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, stride=2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, 3, stride=2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def calibrate_batchnorm(twin: nn.Module, seed: int = 1) -> nn.Module:
  """Running statistics from one training-mode batch, then randomly perturbed.

  PyTorch's default conv initialisation shrinks the signal ~2.5x per layer, so with arbitrary
  running statistics the pool features no longer depend on the input (a wrong resize or kernel
  layout would go unnoticed). Statistics measured on a batch keep every layer near unit scale;
  the perturbation keeps them non-trivial.
  """
  generator = torch.Generator().manual_seed(seed)
  norms = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for norm in norms:
      norm.momentum = 1.0  # running statistics := this batch's
    twin.train()(torch.rand(2, 3, 75, 75, generator=generator))
    for norm in norms:
      size = norm.num_features
      norm.running_mean += 0.1 * torch.randn(size, generator=generator) * norm.running_var.sqrt()
      norm.running_var *= torch.exp(0.2 * torch.randn(size, generator=generator))
      norm.momentum = 0.1
  return twin.eval()
