"""glibc malloc settings that stop XLA's CPU runtime from faulting in fresh pages every step.

Measured (README, design notes): XLA's CPU executable allocates its temporaries per execution,
from its worker threads. glibc gives each thread its own arena, a thread arena cannot hold a
chunk larger than its 64 MiB heap, so such a chunk (326 MiB per ListOps L=256 train step) is
always mmapped and unmapped on free, and the next step zero-fills it again page by page: half
of all CPU time went to the kernel. One arena (the main, brk-grown heap), no mmapped chunks and
no trimming keep freed memory in the process for the next step: the same run then spends 2% of
its time in the kernel and runs 1.7x faster. The cost is that the process keeps its peak heap.

`keep_freed_memory()` must run before the threads exist (before `import jax`); `train.py`,
`eval.py`, the benchmark's workers and the test runner call it first. `LRA_MALLOC=system` keeps
glibc's defaults; a non-glibc libc is left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
INT_MAX = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
  """Applies the settings once; True when glibc accepted all three."""
  global _applied  # pylint: disable=global-statement
  if _applied is not None:
    return _applied
  _applied = False
  if os.environ.get("LRA_MALLOC", "") == "system":
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  _applied = all(mallopt(param, value) == 1 for param, value in
                 ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, INT_MAX)))
  return _applied
