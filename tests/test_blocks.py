"""Each building block of architecture.md 2 against its PyTorch twin, eval and training mode."""

import jax
import numpy as np
import pytest
import torch
from torch_oracles import to_channels_first, to_channels_last

from mmfa_jax.models.blocks import (
  DownBlock,
  Hourglass,
  ResBlock,
  SameBlock2d,
  UpBlock,
  channels_to_depth,
  depth_to_channels,
)
from pretrained_converters import torch_reference as torch_twins
from pretrained_converters.common import convert_state_dict

torch.manual_seed(0)

CASES = {
  "down2d": (lambda: torch_twins.DownBlock2d(5, 7), lambda: DownBlock(7, ndim=2), (2, 9, 8, 5)),
  "down3d": (lambda: torch_twins.DownBlock3d(5, 7), lambda: DownBlock(7, ndim=3), (2, 3, 8, 6, 5)),
  "up2d": (lambda: torch_twins.UpBlock2d(5, 7), lambda: UpBlock(7, ndim=2), (2, 4, 5, 5)),
  "up3d": (lambda: torch_twins.UpBlock3d(5, 7), lambda: UpBlock(7, ndim=3), (2, 3, 4, 5, 5)),
  "same": (lambda: torch_twins.SameBlock2d(5, 7, 7, 3), lambda: SameBlock2d(7, 7, 3), (2, 9, 9, 5)),
  "same_lrelu": (
    lambda: torch_twins.SameBlock2d(5, 7, 3, 1, lrelu=True),
    lambda: SameBlock2d(7, 3, 1, leaky_relu=True),
    (2, 6, 6, 5),
  ),
  "res2d": (lambda: torch_twins.ResBlock(6, 2), lambda: ResBlock(ndim=2), (2, 6, 7, 6)),
  "res3d": (lambda: torch_twins.ResBlock(6, 3), lambda: ResBlock(ndim=3), (2, 3, 6, 5, 6)),
  "hourglass": (
    lambda: torch_twins.Hourglass(4, 6, 3, 16),
    lambda: Hourglass(4, num_blocks=3, max_features=16),
    (2, 2, 16, 16, 6),
  ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("train", [False, True])
def test_block_matches_twin(case, train):
  make_twin, make_block, shape = CASES[case]
  twin = torch_twins.randomize_batchnorm(make_twin(), seed=len(case)).train(train)
  block = make_block()
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  template = jax.eval_shape(lambda key, x: block.init(key, x, False), jax.random.key(0), x)
  variables = convert_state_dict(
    {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()}, template
  )
  got, updates = block.apply(variables, x, train, mutable=["batch_stats"])
  with torch.no_grad():
    want = to_channels_last(twin(to_channels_first(x)))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  if train:  # running statistics moved exactly as PyTorch's
    for module_name, module in twin.named_modules():
      if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        stats = updates["batch_stats"]
        for part in (
          module_name.replace("encoder.down_blocks.", "encoder.down_blocks_")
          .replace("decoder.up_blocks.", "decoder.up_blocks_")
          .split(".")
        ):
          stats = stats[part]
        np.testing.assert_allclose(stats["var"], module.running_var.numpy(), atol=1e-5)


def test_channel_depth_reshapes_follow_c_major_order():
  flat = np.arange(2 * 3 * 4 * 12, dtype=np.float32).reshape(2, 3, 4, 12)  # C*D = 3 * 4
  volume = np.asarray(channels_to_depth(flat, 4))
  assert volume.shape == (2, 4, 3, 4, 3)  # (B, D, H, W, C)
  # torch: flat channel c * D + d becomes volume[c, d].
  want = to_channels_first(flat).view(2, 3, 4, 3, 4).permute(0, 2, 3, 4, 1).numpy()
  np.testing.assert_array_equal(volume, want)
  np.testing.assert_array_equal(depth_to_channels(volume), flat)
