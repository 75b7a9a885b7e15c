"""The mutation list stays usable: every entry applies once and names tests that exist.

The check itself (`python -m pytest -m mutations -n 2`) is slow and runs on demand; this keeps
its list from rotting between runs.
"""
import ast
from pathlib import Path

import pytest

from models.attention import registry
from tests import mutation_check

ROOT = mutation_check.ROOT


def test_every_mutation_applies_exactly_once_and_changes_the_line(tmp_path):
  for mutation in mutation_check.by_name().values():
    assert mutation.old != mutation.new, mutation.name
    (tmp_path / mutation.path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / mutation.path).write_text((ROOT / mutation.path).read_text())
    mutation_check.apply(mutation, tmp_path)  # raises unless the fragment occurs exactly once
    assert (tmp_path / mutation.path).read_text() != (ROOT / mutation.path).read_text()


def _test_names(path: Path) -> set[str]:
  tree = ast.parse(path.read_text())
  return {node.name for node in ast.walk(tree)
          if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith(
              ("test", "Test"))}


def test_every_named_test_exists():
  for mutation in mutation_check.by_name().values():
    assert mutation.tests, mutation.name
    for node in mutation.tests:
      path, _, rest = node.partition("::")
      assert (ROOT / path).is_file(), f"{mutation.name}: no test file {path}"
      if rest:
        name = rest.split("::")[0].split("[")[0]
        assert name in _test_names(ROOT / path), f"{mutation.name}: {path} has no {name}"


def test_every_registered_mixer_has_a_mutation_of_its_own_file():
  mutated = {mutation.path for mutation in mutation_check.MUTATIONS}
  for name in registry.names():
    module = registry.get(name).mixer.__module__
    path = module.replace(".", "/") + ".py"
    assert path in mutated, f"no mutation of {path} (mixer {name!r}) in tests/mutation_check.py"


def test_the_apply_refuses_a_fragment_that_is_missing_or_repeated(tmp_path):
  (tmp_path / "m.py").write_text("a = 1\na = 1\n")
  for old in ("a = 1", "b = 2"):
    with pytest.raises(ValueError, match="m.py contains"):
      mutation_check.apply(mutation_check.Mutation("x", "m.py", old, "c = 3", ("t",)), tmp_path)


def test_a_caught_and_a_surviving_mutation_are_told_apart(tmp_path, monkeypatch):
  repo = tmp_path / "repo"
  repo.mkdir()
  (repo / "mutated.py").write_text("def f():\n  return 1\n")
  (repo / "test_mutated.py").write_text("from mutated import f\n\ndef test_f():\n  assert f() == 1\n")
  monkeypatch.setattr(mutation_check, "copy_repository",
                      lambda destination: __import__("shutil").copytree(repo, destination))
  caught = mutation_check.Mutation("c", "mutated.py", "return 1", "return 2", ("test_mutated.py",))
  survived = mutation_check.Mutation("s", "mutated.py", "def f():", "def f(): # x",
                                     ("test_mutated.py",))
  assert mutation_check.run(caught, tmp_path / "a")[0] == "caught"
  assert mutation_check.run(survived, tmp_path / "b")[0] == "survived"


def test_the_readme_states_the_number_of_mutations():
  text = " ".join((ROOT / "README.md").read_text().split())
  assert f"({len(mutation_check.MUTATIONS)} small breaking changes" in text
