"""Input data: built-in synthetic talking heads, VoxCeleb-style video folders, grain pipelines."""
