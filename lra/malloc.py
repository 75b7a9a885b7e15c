"""glibc malloc settings that stop XLA's CPU runtime from faulting in fresh pages every step.

Measured (README, design notes): XLA's CPU executable allocates its temporaries per execution,
from its worker threads. glibc gives each thread its own arena, a thread arena cannot hold a
chunk larger than its 64 MiB heap, so such a chunk (326 MiB per ListOps L=256 train step) is
always mmapped and unmapped on free, and the next step zero-fills it again page by page: half
of all CPU time went to the kernel. One arena (the main, brk-grown heap), no mmapped chunks and
no trimming below 2 GiB keep freed memory in the process for the next step: the same run then
spends 1% of its time in the kernel and runs 2x faster (docs/cpu_overhead_l256.json). The cost
is that the process keeps its peak heap.

`keep_freed_memory()` must run before the threads exist (before `import jax`); `train.py`,
`eval.py`, the benchmark's workers and the test runner call it first. `LRA_MALLOC=system` keeps
glibc's defaults; a non-glibc libc is left alone.

The kept heap fragments: the ListOps L=256 step (342 MB compiled) peaks at 2.2 GB (1.1 GB with
glibc's defaults), and an 8.7 GB step (dense attention at 8192) grew every step until the
kernel killed it. So `limit_to_step(bytes)`, called once the train step is compiled, hands
chunks of 32 MiB and more back to mmap when the step needs more than `LRA_MALLOC_KEEP_MIB`
(default 1024 MiB): such steps fault their temporaries in again, as with glibc's defaults, but
their memory stays bounded.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8
INT_MAX = 2**31 - 1
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)
GLIBC_MMAP_MAX = 65536           # glibc's default M_MMAP_MAX

_applied: bool | None = None


def _mallopt():
  """glibc's `mallopt(int, int) -> int`; OSError/AttributeError where the libc has none."""
  mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  return mallopt


def keep_freed_memory() -> bool:
  """Applies the settings once; True when glibc accepted all three."""
  global _applied  # pylint: disable=global-statement
  if _applied is not None:
    return _applied
  _applied = False
  if os.environ.get("LRA_MALLOC", "") == "system":
    return False
  try:
    mallopt = _mallopt()
  except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
    return False
  _applied = all(mallopt(param, value) == 1 for param, value in
                 ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, INT_MAX)))
  return _applied


def keep_limit_bytes() -> int:
  """The largest compiled step whose memory is kept (`LRA_MALLOC_KEEP_MIB`, default 1024)."""
  text = os.environ.get("LRA_MALLOC_KEEP_MIB", "1024")
  try:
    return int(float(text) * 2**20)
  except ValueError as e:
    raise ValueError(f"LRA_MALLOC_KEEP_MIB={text!r}: expected a number of MiB") from e


def limit_to_step(step_bytes: int | None) -> bool:
  """Gives chunks >= 32 MiB back to mmap when the compiled step needs more than
  `keep_limit_bytes()` (True when it did). A no-op where `keep_freed_memory` did not apply."""
  if not _applied or step_bytes is None or step_bytes <= keep_limit_bytes():
    return False
  mallopt = _mallopt()
  return all(mallopt(param, value) == 1 for param, value in
             ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_MMAP_MAX, GLIBC_MMAP_MAX)))
