#!/usr/bin/env python
"""Writes requirements.lock: the installed versions of requirements.txt's packages and of
everything they need (run it after the suite passed: `python .ci/lock_requirements.py`)."""
import datetime
import platform
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements_path="requirements.txt"):
  stack = [Requirement(line.split("#")[0].strip()) for line in open(requirements_path)
           if line.split("#")[0].strip()]
  pinned = {}
  while stack:
    req = stack.pop()
    key = canonicalize_name(req.name)
    if key in pinned or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
      continue
    dist = metadata.distribution(req.name)  # not installed: install requirements.txt first
    pinned[key] = f"{dist.metadata['Name']}=={dist.version}"
    stack.extend(Requirement(r) for r in dist.requires or [])
  return [pinned[k] for k in sorted(pinned)]


if __name__ == "__main__":
  lines = [f"# Exact versions the test suite last passed with (CPU, Python "
           f"{platform.python_version()}, {datetime.date.today()}).",
           "# Reproducible install: pip install -r requirements.lock "
           "(requirements.txt keeps the working ranges).", *closure()]
  open("requirements.lock", "w").write("\n".join(lines) + "\n")
  print(f"requirements.lock: {len(lines) - 2} packages")
