"""A minimal PNG codec for 8-bit images (PNG spec, ISO/IEC 15948), numpy + zlib only.

No image library is installed here (no PIL), so the Pathfinder generator writes its PNGs with
`encode_gray` (8-bit greyscale, filter type 0, one IDAT chunk) and the reader decodes with
`decode`. `decode` handles non-interlaced 8-bit greyscale / grey+alpha / RGB / RGBA / palette
images and all five row filters (spec sec. 9.2); colour images are reduced to one channel the
way `tf.image.decode_png(..., channels=1)` does (ITU-R BT.601 luma). Anything else (16-bit,
interlaced, sub-byte depths) falls back to TensorFlow's decoder when TensorFlow is installed.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_gray(image: np.ndarray, level: int = 6) -> bytes:
  """uint8 `[H, W]` -> PNG bytes (greyscale, bit depth 8, every row filter 0 'None')."""
  image = np.ascontiguousarray(image, np.uint8)
  if image.ndim != 2:
    raise ValueError(f"encode_gray expects a 2-D uint8 image, got shape {image.shape}")
  height, width = image.shape
  rows = np.concatenate([np.zeros((height, 1), np.uint8), image], axis=1)  # filter byte 0
  header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return (SIGNATURE + _chunk(b"IHDR", header)
          + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + _chunk(b"IEND", b""))


def _paeth(a: int, b: int, c: int) -> int:
  p = a + b - c
  pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
  return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _unfilter(raw: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
  """Undoes the per-row filters (spec sec. 9.2); vectorised except Average/Paeth rows."""
  rows = raw.reshape(height, stride + 1)
  kinds, data = rows[:, 0], rows[:, 1:].astype(np.int32)
  if not kinds.any():
    return data.astype(np.uint8)
  out = np.zeros((height, stride), np.int32)
  prev = np.zeros(stride, np.int32)
  for y in range(height):
    line, kind = data[y].copy(), kinds[y]
    if kind == 1:  # Sub: running sum per byte lane
      line = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
    elif kind == 2:  # Up
      line = (line + prev) % 256
    elif kind in (3, 4):  # Average, Paeth: each byte depends on the reconstructed left byte
      for x in range(stride):
        left = line[x - bpp] if x >= bpp else 0
        up_left = prev[x - bpp] if x >= bpp else 0
        pred = (left + prev[x]) // 2 if kind == 3 else _paeth(left, prev[x], up_left)
        line[x] = (line[x] + pred) % 256
    elif kind != 0:
      raise ValueError(f"unknown PNG row filter {kind}")
    out[y] = prev = line
  return out.astype(np.uint8)


def decode(data: bytes, source: str = "<bytes>", prefer_tensorflow: bool = True) -> np.ndarray:
  """PNG bytes -> uint8 `[H, W]` (one channel). Rows filtered with Average/Paeth are
  decoded byte by byte in Python; with `prefer_tensorflow` such files go to TensorFlow's
  decoder when it is installed (hundreds of times faster on large release sets)."""
  if data[:8] != SIGNATURE:
    raise ValueError(f"{source}: not a PNG file (bad signature)")
  pos, header, idat, palette = 8, None, [], None
  while pos + 8 <= len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    pos += 12 + length
    if kind == b"IHDR":
      header = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
      idat.append(body)
    elif kind == b"PLTE":
      palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
    elif kind == b"IEND":
      break
  if header is None:
    raise ValueError(f"{source}: PNG without IHDR chunk")
  width, height, depth, colour, _, _, interlace = header
  if depth != 8 or interlace or colour not in CHANNELS:
    return _decode_with_tensorflow(data, source)
  channels = CHANNELS[colour]
  raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
  if raw.size != height * (width * channels + 1):
    raise ValueError(f"{source}: PNG data has {raw.size} bytes, expected "
                     f"{height * (width * channels + 1)} for {width}x{height}")
  slow_rows = np.isin(raw[::width * channels + 1], (3, 4)).any()
  if slow_rows and prefer_tensorflow and _tensorflow() is not None:
    return _decode_with_tensorflow(data, source)
  pixels = _unfilter(raw, height, width * channels, channels).reshape(height, width, channels)
  if colour == 3:
    if palette is None:
      raise ValueError(f"{source}: palette PNG without PLTE chunk")
    pixels = palette[pixels[..., 0]]
  elif colour in (0, 4):
    return pixels[..., 0]
  rgb = pixels[..., :3].astype(np.float32)
  return np.round(rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


_TF = []


def _tensorflow():
  if not _TF:
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      _TF.append(tf)
    except ImportError:
      _TF.append(None)
  return _TF[0]


def _decode_with_tensorflow(data: bytes, source: str) -> np.ndarray:
  tf = _tensorflow()
  if tf is None:
    raise ValueError(f"{source}: this PNG (16-bit, interlaced or sub-byte depth) needs "
                     "TensorFlow to decode, which is not installed")
  image = tf.io.decode_png(data, channels=1, dtype=tf.uint8).numpy()
  return image[..., 0]
