"""Image files as users have them (gray, CMYK, 16-bit, alpha, palette) read as RGB in [0, 1]; broken
ones (zero bytes, truncated, another format behind the extension, decompression bombs, NaN pixels)
refused with FrameReadError naming the file, before their pixels are decoded where the header lies."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mmfa_jax.data.video import MAX_IMAGE_PIXELS, FrameReadError, read_image


def _png_header_only(path, width, height):
  """A PNG whose header declares ``width x height`` RGB pixels, with almost no pixel data."""

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.fixture
def rgb():
  return np.random.default_rng(0).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


def test_image_modes_read_as_rgb(tmp_path, rgb):
  gray = rgb[..., 0]
  Image.fromarray(gray).save(tmp_path / "gray.png")
  np.testing.assert_allclose(
    read_image(str(tmp_path / "gray.png")), np.repeat(gray[..., None], 3, -1) / 255
  )
  rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 7, np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / "alpha.png")
  np.testing.assert_allclose(read_image(str(tmp_path / "alpha.png")), rgb / 255)
  sixteen = (gray.astype(np.uint16) * 257).astype(np.uint16)
  Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
  np.testing.assert_allclose(
    read_image(str(tmp_path / "sixteen.png"))[..., 0], gray / 255, atol=1e-6
  )
  Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=8).save(tmp_path / "palette.png")
  palette = read_image(str(tmp_path / "palette.png"))
  assert palette.shape == (12, 16, 3) and np.abs(palette - rgb / 255).mean() < 0.15
  Image.fromarray(gray / np.float32(255), mode="F").save(tmp_path / "float.tiff")
  np.testing.assert_allclose(
    read_image(str(tmp_path / "float.tiff"))[..., 2], gray / 255, atol=1e-6
  )
  Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
  cmyk = read_image(str(tmp_path / "cmyk.jpg"))
  assert cmyk.shape == (12, 16, 3) and np.abs(cmyk - rgb / 255).mean() < 0.05


def test_broken_images_are_refused_naming_the_file(tmp_path, rgb):
  (tmp_path / "empty.png").write_bytes(b"")
  (tmp_path / "text.png").write_text("not an image")
  Image.fromarray(rgb).save(tmp_path / "whole.png")
  (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
  Image.fromarray(np.full((4, 4), np.nan, np.float32), mode="F").save(tmp_path / "nan.tiff")
  for name in ("empty.png", "text.png", "cut.png", "nan.tiff"):
    with pytest.raises(FrameReadError, match=rf"{name}: not a readable image"):
      read_image(str(tmp_path / name))


@pytest.mark.parametrize("side", [9_000, 100_000])  # above our limit; above PIL's own as well
def test_decompression_bombs_are_refused_from_the_header(tmp_path, side):
  assert side * side > MAX_IMAGE_PIXELS
  _png_header_only(tmp_path / "bomb.png", side, side)
  with pytest.raises(
    FrameReadError, match=r"bomb\.png: .*(more than this reads|decompression bomb)"
  ):
    read_image(str(tmp_path / "bomb.png"))
