"""lra.release: finding a task's files in an unpacked LRA release in each layout users end up
with (the folder itself, DIR/<task>, DIR/lra_release/<task>, DIR/lra_release/lra_release/<task>),
which one wins when several hold files, incomplete folders skipped, the not-found error (what,
which files, every place looked in, the fix), `~` expansion, the blank-line error and the cache
root's precedence. Unpacking `lra_release.gz` itself is lra.prepare's (tests/test_prepare.py)."""
import re
import tarfile

import ml_collections
import pytest

from lra import release

FILES = ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
SUB = "listops-1000"


def fill(folder, files=FILES):
  folder.mkdir(parents=True, exist_ok=True)
  for name in files:
    (folder / name).write_text(f"Source\tTarget\n( 1 )\t1\n# {folder}\n")
  return folder


def find(data_dir, required=FILES):
  return release.find_task_dir(data_dir, SUB, required, what="ListOps", fix="Do the fix.")


def test_release_roots_are_the_three_known_unpackings(tmp_path):
  assert release.release_roots(tmp_path) == [tmp_path, tmp_path / "lra_release",
                                             tmp_path / "lra_release" / "lra_release"]


@pytest.mark.parametrize("layout", ["", SUB, f"lra_release/{SUB}",
                                    f"lra_release/lra_release/{SUB}"])
def test_each_layout_is_found(tmp_path, layout):
  folder = fill(tmp_path / "data" / layout)
  assert find(tmp_path / "data") == folder


def test_files_from_an_unpacked_official_archive_are_found(tmp_path):
  source = fill(tmp_path / "src" / "lra_release" / SUB)
  archive_path = tmp_path / "lra_release.gz"  # the release: a gzipped tar named .gz
  with tarfile.open(archive_path, "w:gz") as archive:
    archive.add(tmp_path / "src" / "lra_release", arcname="lra_release")
  with tarfile.open(archive_path) as archive:
    archive.extractall(tmp_path / "data", filter="data")
  found = find(tmp_path / "data")
  assert found == tmp_path / "data" / "lra_release" / SUB
  assert (found / "basic_val.tsv").read_text() == (source / "basic_val.tsv").read_text()


def test_the_shallowest_complete_folder_wins(tmp_path):
  data = tmp_path / "data"
  fill(data / "lra_release" / "lra_release" / SUB)
  middle = fill(data / "lra_release" / SUB)
  assert find(data) == middle
  top = fill(data / SUB)
  assert find(data) == top
  assert find(fill(data)) == data  # the folder itself comes first of all


def test_an_incomplete_folder_is_skipped_for_a_complete_one(tmp_path):
  data = tmp_path / "data"
  fill(data / SUB, FILES[:2])  # no basic_test.tsv here
  (data / SUB / "basic_test.tsv").mkdir()  # a folder of that name is not the file
  complete = fill(data / "lra_release" / "lra_release" / SUB)
  assert find(data) == complete


def test_not_found_names_the_files_every_place_looked_in_and_the_fix(tmp_path):
  data = tmp_path / "data"
  fill(data / "lra_release" / SUB, FILES[:1])
  with pytest.raises(FileNotFoundError) as error:
    find(data)
  message = str(error.value)
  assert message.startswith(f"no ListOps files ({', '.join(FILES)}) under {data} (looked in ")
  looked = [data, data / SUB, data / "lra_release" / SUB, data / "lra_release" / "lra_release" / SUB]
  assert f"(looked in {', '.join(map(str, looked))}). Do the fix." in message


def test_data_dir_with_tilde_is_expanded(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  folder = fill(tmp_path / "lra" / "lra_release" / SUB)
  assert find("~/lra") == folder
  with pytest.raises(FileNotFoundError, match=re.escape(f"under {tmp_path / 'missing'} ")):
    find("~/missing")


def test_blank_line_error_names_file_and_line(tmp_path):
  error = release.blank_line_error(tmp_path / "basic_val.tsv", 17)
  assert isinstance(error, ValueError)
  assert str(error).startswith(f"{tmp_path / 'basic_val.tsv'}:17: blank line; expected a data row")


def test_cache_root_prefers_config_then_environment_then_home(tmp_path, monkeypatch):
  config = ml_collections.ConfigDict({"cache_dir": ""})
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("LRA_CACHE_DIR", str(tmp_path / "env"))
  assert release.cache_root(config) == tmp_path / "env"
  monkeypatch.delenv("LRA_CACHE_DIR")
  assert release.cache_root(config) == tmp_path / "home" / ".cache" / "lra_zoo"
  config.cache_dir = "~/mine"
  monkeypatch.setenv("LRA_CACHE_DIR", str(tmp_path / "env"))
  assert release.cache_root(config) == tmp_path / "home" / "mine"
