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


def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """PNG bytes -> `[H, W]` uint8; colour images are converted to luma (ITU-R 601-2)."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f"{name}: not a readable PNG ({e})") from None
  if image.mode != "L":
    image = image.convert("L")
  return np.asarray(image, np.uint8)
