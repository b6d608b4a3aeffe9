"""State_dicts of the synthesis side -> mmfa_jax variables: generators (original, SPADE,
multi-scale), discriminator, VGG19, VGG-Face and the expression VAE.

Spectral-normalised layers are read from ``weight_orig``, ``weight_u``, ``weight_v``.
"""

from __future__ import annotations

from pretrained_converters.common import BLOCK_LISTS, DEFAULT_NAMES, NameMap

# Original, SPADE or multi-scale generator (``dense_motion_network`` included).
convert_generator = NameMap(
  renames=((r"(down_blocks|up_blocks|mlp_shared)_(\d+)", r"\1.\2"),)
).converter("generator")
# ``MultiScaleDiscriminator``: keys ``discs.{scale}.down_blocks.{i}.conv.weight_orig`` ...
convert_discriminator = NameMap(renames=((r"discs_(.*)", r"discs.\1"), *BLOCK_LISTS)).converter(
  "discriminator"
)
# torchvision VGG19 (``features.{i}``); layers past relu5_1, the classifier and stored
# normalisation buffers are not needed.
convert_vgg19 = NameMap(
  renames=((r"features_(.*)", r"features.\1"),),
  ignore=(r"^features\.(3[0-9])\.", r"^classifier\.", r"^(mean|std)$"),
).converter("vgg19")
# ``vgg_face_dag`` (``conv{b}_{j}``, ``fc6..8``); conv5_2, conv5_3 and the fc layers are unused.
convert_vggface = NameMap(ignore=(r"^conv5_[23]\.", r"^fc[678]\.")).converter("vggface")
# Expression VAE and latent discriminator: names map one to one.
convert_by_name = DEFAULT_NAMES.converter("state_dict")
