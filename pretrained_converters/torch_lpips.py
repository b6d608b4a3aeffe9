"""PyTorch twin of LPIPS v0.1 with the AlexNet trunk (the ``lpips`` package's
``LPIPS(net='alex', version='0.1')``), written from its description: plain torch.nn, no torchvision
and no ``lpips`` import, the oracle for ``mmfa_jax.models.lpips`` and for ``--verify``.

Names reproduce the upstream files: ``features.{0,3,6,8,10}.{weight,bias}`` (torchvision
``alexnet().features``) and ``lin{k}.model.1.weight`` (the package's ``weights/v0.1/alex.pth``,
``NetLinLayer = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))``). The ScalingLayer constants are
non-persistent buffers, so ``state_dict()`` holds exactly those names. Inputs are NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (64, 192, 384, 256, 256)  # at the five tapped ReLUs
TAPS = (1, 4, 7, 9, 11)  # indices of those ReLUs in ``features``


def alexnet_features() -> nn.Sequential:
  """torchvision ``alexnet().features`` (13 modules, conv weights at 0, 3, 6, 8, 10)."""
  return nn.Sequential(
    nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
    nn.ReLU(),
    nn.MaxPool2d(kernel_size=3, stride=2),
    nn.Conv2d(64, 192, kernel_size=5, padding=2),
    nn.ReLU(),
    nn.MaxPool2d(kernel_size=3, stride=2),
    nn.Conv2d(192, 384, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.Conv2d(384, 256, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.Conv2d(256, 256, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(kernel_size=3, stride=2),
  )


class NetLinLayer(nn.Module):
  """The package's per-layer weighting: dropout (inactive in eval) then a 1x1 conv to 1 channel."""

  def __init__(self, channels: int):
    super().__init__()
    self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.model(x)


def normalize_tensor(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
  """Unit norm over channels (dim 1) per pixel."""
  return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
  """``forward(x, y)``: (B, 3, H, W) images in [0, 1] -> (B,) distances (``normalize=True``)."""

  def __init__(self):
    super().__init__()
    self.features = alexnet_features()
    for k, channels in enumerate(CHANNELS):
      setattr(self, f"lin{k}", NetLinLayer(channels))
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    self.register_buffer("shift", shift, persistent=False)
    self.register_buffer("scale", scale, persistent=False)

  def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
    """The five ReLU outputs of AlexNet for [0, 1] images (scaled as the package does)."""
    h = ((2 * images - 1) - self.shift) / self.scale
    out = []
    for index, layer in enumerate(self.features[: TAPS[-1] + 1]):
      h = layer(h)
      if index in TAPS:
        out.append(h)
    return out

  def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    total = 0
    for k, (fx, fy) in enumerate(zip(self.taps(x), self.taps(y))):
      diff = (normalize_tensor(fx) - normalize_tensor(fy)) ** 2
      total = total + getattr(self, f"lin{k}")(diff).mean(dim=(2, 3), keepdim=True)
    return total.view(-1)


def split_file_states(
  state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
  """A twin's ``state_dict()`` -> (the AlexNet file's ``features.*``, the linear file's
  ``lin*``), i.e. what the two upstream files hold (torchvision's ``classifier.*`` aside)."""
  alexnet = {k: v for k, v in state.items() if k.startswith("features.")}
  linear = {k: v for k, v in state.items() if k.startswith("lin")}
  return alexnet, linear
