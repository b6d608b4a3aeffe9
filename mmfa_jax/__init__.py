"""mmfa_jax: JAX/Flax MMFA face animation (and the face-vid2vid reference it builds on).

Sub-packages: ``mmfa_jax.ops`` (grid sampling, rotations, keypoint transforms, pyramids, TPS warps,
PyTorch-exact layer helpers); networks live in ``mmfa_jax.models``.
"""

__version__ = "0.1.0"
