"""ListOps: generator distribution and determinism, release-format reader, errors."""
import filecmp

import numpy as np
import pytest

from configs import base_listops
from lra import listops

FIXTURES = "tests/fixtures/listops"


def evaluate_tokens(tokens):
  """Independent evaluation of a prefix expression (parentheses removed, ']' as 'X')."""
  stack = []
  for token in tokens:
    if token.startswith("["):
      stack.append([token])
    elif token == "X":
      op, *args = stack.pop()
      value = {"[MIN": min, "[MAX": max, "[SM": lambda a: sum(a) % 10,
               "[MED": lambda a: int(np.median(a))}[op](args)
      if not stack:
        return value
      stack[-1].append(value)
    else:
      if not stack:
        return int(token)
      stack[-1].append(int(token))
  raise AssertionError("unbalanced expression")


def small_params(**overrides):
  params = listops.generation_params(base_listops.get_config("quick").data)
  params.update(num_train=300, num_val=50, num_test=50, **overrides)
  return params


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = tmp_path_factory.mktemp("gen")
  params = small_params(max_depth=4, min_length=20, max_length=60)
  listops.generate(params, out, processes=2)
  return out, params


def rows(path):
  lines = path.read_text().splitlines()
  assert lines[0] == "Source\tTarget"
  return [line.split("\t") for line in lines[1:]]


def test_labels_match_independent_evaluation(generated):
  out, _ = generated
  for source, target in rows(out / "basic_train.tsv"):
    assert evaluate_tokens(listops.tokenize(source)) == int(target), source


def test_lengths_and_split_sizes_follow_config(generated):
  out, params = generated
  sizes = {"basic_train.tsv": 300, "basic_val.tsv": 50, "basic_test.tsv": 50}
  everything = []
  for name, size in sizes.items():
    split_rows = rows(out / name)
    assert len(split_rows) == size
    for source, _ in split_rows:
      length = len(listops.tokenize(source))
      assert params["min_length"] < length < params["max_length"]
      depth = max_nesting(listops.tokenize(source))
      assert depth <= params["max_depth"]
    everything += [source for source, _ in split_rows]
  assert len(set(everything)) == len(everything)  # de-duplicated across splits


def max_nesting(tokens):
  depth = best = 0
  for token in tokens:
    if token.startswith("["):
      depth += 1
      best = max(best, depth)
    elif token == "X":
      depth -= 1
  return best


def binarised(tokens):
  """Formats prefix tokens the way the original to_string() writes its binary tree."""
  def parse(i):
    if not tokens[i].startswith("["):
      return tokens[i], i + 1
    node, i = tokens[i], i + 1
    while tokens[i] != "X":
      arg, i = parse(i)
      node = f"( {node} {arg} )"
    return f"( {node} ] )", i + 1
  text, end = parse(0)
  assert end == len(tokens)
  return text


def test_written_format_is_the_release_binarised_form(generated):
  out, _ = generated
  for source, _ in rows(out / "basic_train.tsv")[:50]:
    assert binarised(listops.tokenize(source)) == source
  assert binarised(["[MAX", "2", "9", "X"]) == "( ( ( [MAX 2 ) 9 ) ] )"  # lra_tasks.md example


def test_same_seed_same_files_any_process_count(generated, tmp_path):
  out, params = generated
  listops.generate(params, tmp_path, processes=1)
  for name in listops.SPLIT_FILES.values():
    assert filecmp.cmp(out / name, tmp_path / name, shallow=False)
  other = tmp_path / "other"
  listops.generate(dict(params, seed=1), other, processes=1)
  assert not filecmp.cmp(out / "basic_train.tsv", other / "basic_train.tsv", shallow=False)


def test_operator_probability_matches_original():
  # Root is an operator with probability 0.25 (value with 0.75), as in make_data.py.
  import random
  params = small_params()
  params["max_length"] = 10_000
  rng = random.Random(0)
  roots = [listops._tree(rng, 1, params, [10_000])[0] for _ in range(4000)]
  share = np.mean([r.startswith("(") for r in roots])
  assert abs(share - 0.25) < 0.03


def test_fixture_reads_to_expected_tokens():
  split = listops.read_tsv(f"{FIXTURES}/basic_train.tsv", max_length=12)
  ids = listops.TOKEN_IDS
  expected = [ids[t] for t in ["[MAX", "2", "9", "X"]]
  np.testing.assert_array_equal(split.inputs[0, :4], expected)
  assert split.lengths.tolist() == [4, 8, 5]
  assert split.targets.tolist() == [9, 5, 2]
  assert (split.inputs[0, 4:] == 0).all()
  for row, length, target in zip(split.inputs, split.lengths, split.targets):
    tokens = [listops.VOCAB[i] for i in row[:length]]
    assert evaluate_tokens(tokens) == target


def test_generated_and_release_rows_share_one_reader(generated, tmp_path):
  out, _ = generated
  # A release-format file holding generated expressions reads to the same tokens.
  src_rows = rows(out / "basic_test.tsv")[:5]
  fixture = tmp_path / "release.tsv"
  fixture.write_text("Source\tTarget\n" + "".join(f"{s}\t{t}\n" for s, t in src_rows))
  a = listops.read_tsv(out / "basic_test.tsv", 60)
  b = listops.read_tsv(fixture, 60)
  np.testing.assert_array_equal(a.inputs[:5], b.inputs)


@pytest.mark.parametrize("content,message", [
    ("Source\tTarget\n( ( [MAX 2 ) ] )\n", r"bad\.tsv:2: expected 2 tab-separated fields"),
    ("Source\tTarget\n( ( [MAX 2 ) ] )\t12\n", r"bad\.tsv:2: Target must be a digit"),
    ("Source\tTarget\n( ( [MAX 2 ) ] )\t1\n( ( [FOO 2 ) ] )\t1\n", r"bad\.tsv:3: unknown ListOps token"),
    ("Input\tLabel\n", r"bad\.tsv:1: expected the header"),
    ("Source\tTarget\n", r"bad\.tsv: has the header but no rows"),
    ("Source\tTarget\n( ( [MAX 2 ) ] )\t1\n\n( ( [MIN 2 ) ] )\t2\n", r"bad\.tsv:3: blank line"),
    ("Source\tTarget\n( ( [MAX 2 ) ] )\t1\n \t \n", r"bad\.tsv:3: blank line"),
    ("Source\tTarget\n( ( [MAX 2 ) ] )\t1\n\n", r"bad\.tsv:3: blank line"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
  path = tmp_path / "bad.tsv"
  path.write_text(content)
  with pytest.raises(ValueError, match=message):
    listops.read_tsv(path, 10)


def test_load_reads_release_layout(tmp_path):
  import shutil
  release = tmp_path / "lra_release" / "listops-1000"
  shutil.copytree(FIXTURES, release)
  config = base_listops.get_config("tiny")
  config.data_dir = str(tmp_path)
  task = listops.load(config)
  assert task.sizes() == {"train": 3, "validation": 3, "test": 3}
  assert task.vocab_size == len(listops.VOCAB) and task.num_classes == 10


def test_load_rejects_a_split_with_no_rows(tmp_path):
  """Before: it trained, then reported accuracy 0.0 on 0 test examples and a NaN majority."""
  import shutil
  release = tmp_path / "listops-1000"
  shutil.copytree(FIXTURES, release)
  (release / "basic_test.tsv").write_text("Source\tTarget\n")
  config = base_listops.get_config("tiny")
  config.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match=r"listops-1000/basic_test\.tsv: has the header but no "
                     "rows"):
    listops.load(config)


def test_missing_release_says_how_to_fix(tmp_path):
  config = base_listops.get_config("tiny")
  config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="lra.prepare --tasks=listops"):
    listops.load(config)


def test_load_generates_once_into_cache(tmp_path):
  config = base_listops.get_config("tiny")
  config.cache_dir = str(tmp_path)
  task = listops.load(config)
  assert task.sizes() == {"train": 256, "validation": 64, "test": 64}
  folder = listops.generated_dir(config)
  stamp = (folder / "basic_train.tsv").stat().st_mtime_ns
  listops.load(config)
  assert (folder / "basic_train.tsv").stat().st_mtime_ns == stamp


def test_command_line_parses_its_arguments(tmp_path, monkeypatch, capsys):
  """`python -m lra.listops --help` used to create a folder named `--help` and fill it."""
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit) as help_exit:
    listops.main(["--help"])
  assert help_exit.value.code == 0 and "OUT_DIR" in capsys.readouterr().out.upper()
  for bad in (["--bogus", "out"], [], ["-x"]):
    with pytest.raises(SystemExit) as error:
      listops.main(bad)
    assert error.value.code == 2
  assert list(tmp_path.iterdir()) == []  # nothing written by any of those
  listops.main([str(tmp_path / "set"), "--preset=tiny", "--processes=1"])
  sizes = {split: len((tmp_path / "set" / f"basic_{split}.tsv").read_text().splitlines()) - 1
           for split in ("train", "val", "test")}
  config = base_listops.get_config("tiny").data.generator
  assert sizes == {"train": config.num_train, "val": config.num_val, "test": config.num_test}
