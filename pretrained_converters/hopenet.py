"""deep-head-pose's Hopenet state_dict -> mmfa_jax ``Hopenet`` variables.

Torch names follow torchvision's ResNet: ``layer{L}.{b}.conv1`` ..., ``layer{L}.0.downsample.0``
(conv) and ``.downsample.1`` (BN); heads ``fc_yaw``, ``fc_pitch``, ``fc_roll``. The unused
``fc_finetune`` is skipped; old pickles without ``num_batches_tracked`` are fine.
"""

from __future__ import annotations

from pretrained_converters.common import BATCH_COUNTER, NameMap

NAMES = NameMap(
  renames=(
    (r"(layer\d)_(\d+)", r"\1.\2"),
    ("downsample_conv", "downsample.0"),
    ("downsample_bn", "downsample.1"),
  ),
  ignore=(BATCH_COUNTER, r"^fc_finetune\."),
)
convert = NAMES.converter("hopenet")
