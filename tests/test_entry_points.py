"""Every program (a file with `if __name__ == "__main__":`) parses its arguments for real.

`--help` prints help and writes nothing (once, `python -m lra.listops --help` made a folder named
`--help` and filled it with 650 MB); an unknown flag is refused in one line naming it, with no
traceback. Programs are found by scanning the repository, so a new one is covered too.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"tests", ".git", ".venv", "runs", "data"}
# Required positional arguments, given so that the unknown flag is what gets refused.
POSITIONAL = {"lra/listops.py": ["out"]}


def programs() -> list[str]:
  found = []
  for path in sorted(ROOT.rglob("*.py")):
    relative = path.relative_to(ROOT)
    if SKIP_DIRS & set(relative.parts[:-1]) or "site-packages" in relative.parts:
      continue
    if 'if __name__ == "__main__":' in path.read_text():
      found.append(str(relative))
  return found


def command(program: str) -> list[str]:
  if program.startswith("lra/"):  # package modules run as `python -m lra.x`
    return [sys.executable, "-m", program.removesuffix(".py").replace("/", ".")]
  return [sys.executable, str(ROOT / program)]


def run(program: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.run(command(program) + args, cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def test_the_scan_finds_the_known_programs():
  assert {"train.py", "eval.py", "lra/listops.py", "lra/sweep.py", "lra/report.py",
          "lra/benchmark.py", "lra/prepare.py", "lra/pathfinder.py",
          "benchmarks/torch_attention.py", ".ci/lock_requirements.py"} <= set(programs())


@pytest.mark.parametrize("program", programs())
def test_help_writes_nothing_and_an_unknown_flag_is_one_line(program, tmp_path):
  done = run(program, ["--help"], tmp_path)
  assert done.returncode in (0, 1), done.stderr[-2000:]  # absl's --help exits with 1
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  assert "flags:" in done.stdout + done.stderr or "usage:" in done.stdout + done.stderr
  assert not list(tmp_path.iterdir()), f"{program} --help wrote {list(tmp_path.iterdir())}"
  done = run(program, POSITIONAL.get(program, []) + ["--no_such_flag=1"], tmp_path)
  assert done.returncode != 0, done.stdout[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  assert "no_such_flag" in done.stderr, done.stderr[-2000:]
  assert not list(tmp_path.iterdir()), f"{program} wrote {list(tmp_path.iterdir())}"
