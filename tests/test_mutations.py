"""Every entry of `tests/mutation_check.py` must make its named tests fail.

Deselected by default (`pytest.ini`); run with `python -m pytest -m mutations -n 2`.
"""
import pytest

from tests import mutation_check


@pytest.mark.mutations
@pytest.mark.parametrize("name", sorted(mutation_check.by_name()))
def test_the_suite_catches_the_mutation(name, tmp_path):
  mutation = mutation_check.by_name()[name]
  verdict, tail = mutation_check.run(mutation, tmp_path / "repo")
  assert verdict == "caught", (
      f"mutation {name!r} ({mutation.path}: {mutation.old!r} -> {mutation.new!r}) {verdict}: "
      f"{' '.join(mutation.tests)}\n{tail}")
