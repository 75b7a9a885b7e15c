"""8-bit grayscale PNG reading and writing for Pathfinder, through Pillow."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError


def encode_gray(image: np.ndarray, level: int = 6) -> bytes:
  """`[H, W]` uint8 -> PNG bytes (zlib `level` 0-9)."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8), mode="L").save(buffer, format="PNG",
                                                             compress_level=level)
  return buffer.getvalue()


# Every PNG ends with this empty IEND chunk (length 0, type, CRC); Pillow decodes a file cut
# after its pixel data without complaint, so truncation is checked here.
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """PNG bytes -> `[H, W]` uint8; colour images are converted to luma (ITU-R 601-2).
  Unreadable or truncated data is a ValueError that starts with `name`."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as e:
    raise ValueError(f"{name}: not a readable PNG ({e})") from None
  if image.format == "PNG" and not data.endswith(_IEND):
    raise ValueError(f"{name}: truncated PNG ({len(data)} bytes, no IEND chunk at the end)")
  if image.mode != "L":
    image = image.convert("L")
  return np.asarray(image, np.uint8)
