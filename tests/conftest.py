"""Shared fixtures: a per-session cache for generated data, so tests never touch ~/.cache."""
import os

from lra import malloc

malloc.keep_freed_memory()  # before jax starts its threads: see lra/malloc.py

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("lra_cache")
  return str(path)


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, cache_dir):
  monkeypatch.setenv("LRA_CACHE_DIR", os.environ.get("LRA_TEST_CACHE_DIR", cache_dir))
