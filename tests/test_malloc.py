"""lra/malloc.py: with its settings, XLA's per-execution temporaries stop faulting in fresh
pages every call (counted with getrusage, not timed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lra import malloc

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import resource
from lra import malloc
print(malloc.keep_freed_memory())
import jax, jax.numpy as jnp
step = jax.jit(lambda x: (jnp.sin(x) @ jnp.cos(x).T).sum())  # 32-64 MiB temporaries
x = jnp.ones((4096, 2048))
compiled = step.lower(x).compile()
stats = compiled.memory_analysis()
print(malloc.limit_to_step(stats.temp_size_in_bytes + stats.argument_size_in_bytes))
step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  step(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def faults_per_call(malloc_setting: str, keep_mib: str = "1024") -> tuple[bool, bool, float]:
  """(settings applied, step above the keep limit, page faults per call)"""
  env = dict(os.environ, LRA_MALLOC=malloc_setting, PYTHONPATH=str(ROOT),
             LRA_MALLOC_KEEP_MIB=keep_mib)
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True).stdout.split()
  return out[0] == "True", out[1] == "True", float(out[2])


def test_kept_memory_cuts_page_faults_per_execution_at_least_tenfold():
  applied, limited, ours = faults_per_call("")
  untouched, _, system = faults_per_call("system")
  assert applied and not untouched and not limited
  # Measured: about 10,000 against 1,070,000 (4 GiB of fresh pages per call with the defaults).
  assert system > 64 * 2**20 / 4096, system  # the defaults fault in at least one temporary
  assert ours < system / 10, (ours, system)


def test_settings_apply_once_and_the_test_runner_has_them():
  assert malloc.keep_freed_memory() is True  # tests/conftest.py applied them first
  assert malloc.keep_freed_memory() is True


def test_a_step_above_the_keep_limit_faults_its_large_chunks_in_again():
  """The bounded-memory fallback (fragmentation grew an 8.7 GB step's heap until OOM):
  with the limit below this step's memory, its 32-64 MiB temporaries are mmapped again."""
  applied, limited, faults = faults_per_call("", keep_mib="16")
  assert applied and limited
  assert faults > 32 * 2**20 / 4096, faults  # at least one temporary faulted in per call


def test_keep_limit_errors_name_the_variable(monkeypatch):
  monkeypatch.setenv("LRA_MALLOC_KEEP_MIB", "lots")
  with pytest.raises(ValueError, match="LRA_MALLOC_KEEP_MIB='lots'"):
    malloc.keep_limit_bytes()
  monkeypatch.setenv("LRA_MALLOC_KEEP_MIB", "0.5")
  assert malloc.keep_limit_bytes() == 2**19
