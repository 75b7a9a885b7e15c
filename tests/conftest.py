"""Shared fixtures: a per-session cache for generated data, so tests never touch ~/.cache; and
the XLA settings that make the suite's thousands of small compiles cheaper."""
import os
import shutil
import tempfile

from lra import malloc

malloc.keep_freed_memory()  # before jax starts its threads: see lra/malloc.py

import pytest

# The suite spends its time compiling, not running: thousands of small XLA programs, each run
# once or twice. So, for the tests only (set here, inherited by the xdist workers and by every
# train.py/sweep/benchmark subprocess a test starts):
# - LLVM at -O0 (XLA's default is -O2/-O3): XLA:CPU compiles in about half the time, and the
#   code differs only in float round-off; every comparison in the suite is between programs
#   compiled alike. `LRA_TEST_XLA_OPT=default` keeps XLA's own level.
# - one persistent compilation cache per test session, so a program compiled by one process
#   (the Transformer's `:tiny` train step, compiled by dozens of runs) is read back by the
#   others. Removed when the session ends.
if os.environ.get("LRA_TEST_XLA_OPT", "0") != "default":
  if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
_OWN_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the xdist controller (or a plain run)
  _OWN_XLA_CACHE = tempfile.mkdtemp(prefix="lra-test-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_XLA_CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if _OWN_XLA_CACHE:
    shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("lra_cache")
  return str(path)


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, cache_dir):
  monkeypatch.setenv("LRA_CACHE_DIR", os.environ.get("LRA_TEST_CACHE_DIR", cache_dir))
