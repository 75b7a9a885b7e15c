#!/usr/bin/env python
"""Writes requirements.lock: the installed versions of requirements.txt's packages and of
everything they need (run it after the suite passed: `python .ci/lock_requirements.py`)."""
import argparse
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--requirements", default="requirements.txt", help="ranges to resolve")
  parser.add_argument("--out", default="requirements.lock", help="lock file to write")
  args = parser.parse_args(argv)
  lines = [f"# Exact versions the test suite last passed with (CPU, Python "
           f"{platform.python_version()}, {datetime.date.today()}).",
           f"# Reproducible install: pip install -r {args.out} "
           f"({args.requirements} keeps the working ranges).", *closure(args.requirements)]
  with open(args.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"{args.out}: {len(lines) - 2} packages")


if __name__ == "__main__":
  main()
