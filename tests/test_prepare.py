"""`python -m lra.prepare`: unpacking / linking a (fake, small) release in every known layout,
the found/missing report, ListOps and Retrieval from the release, ListOps generated without
it, TFDS tasks under mock data, and errors that say what fixes them. No network."""
import tarfile

import pytest
import tensorflow_datasets as tfds

from lra import listops, prepare, retrieval

LISTOPS = "Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( ( [MIN 4 ) 3 ) ] )\t3\n"
AAN = "1.0\tp1\tp2\tfirst paper\tsecond paper\n0.0\tp3\tp4\tthird\tfourth\n"


def fake_release(root, pathfinder=True):
  """A tiny lra_release/ with the exact file formats (Pathfinder: only the folder layout)."""
  for split in ("train", "val", "test"):
    path = root / "listops-1000" / f"basic_{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LISTOPS)
  for split in ("train", "eval", "test"):
    path = root / "tsv_data" / f"new_aan_pairs.{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(AAN)
  if pathfinder:
    for difficulty in prepare.PATHFINDER_DIFFICULTIES:
      (root / "pathfinder32" / difficulty / "metadata").mkdir(parents=True)
  return root


def run(tmp_path, tasks, **kwargs):
  lines = []
  outcomes = prepare.run(tasks, cache_dir=str(tmp_path / "cache"), echo=lines.append, **kwargs)
  return {o.task: o for o in outcomes}, "\n".join(lines)


@pytest.mark.parametrize("nested", [False, True])
def test_tarball_is_unpacked_and_reported(tmp_path, nested):
  inner = "lra_release/lra_release" if nested else "lra_release"
  fake_release(tmp_path / "src" / inner, pathfinder=True)
  tarball = tmp_path / "lra_release.gz"
  with tarfile.open(tarball, "w:gz") as archive:
    archive.add(tmp_path / "src" / "lra_release", arcname="lra_release")
  data_dir = tmp_path / "data"
  outcomes, log = run(tmp_path, ["listops", "retrieval", "pathfinder", "pathx"],
                      data_dir=str(data_dir), release=str(tarball), preset="tiny")
  root = data_dir / inner
  assert f"release root: {root}" in log
  assert "listops: found 3/3" in log and "retrieval: found 3/3" in log
  assert "pathfinder: found 3/3" in log
  assert "pathx: found 0/3; missing pathfinder128/curv_baseline/metadata" in log
  assert outcomes["listops"].ok and outcomes["retrieval"].ok and outcomes["pathfinder"].ok
  assert str(root) in outcomes["listops"].message
  assert "pairs tokenised" in outcomes["retrieval"].message
  # what training then reads, through the tasks' own layout search
  assert listops.find_release_dir(data_dir) == root / "listops-1000"
  assert retrieval.find_release_dir(data_dir) == root / "tsv_data"
  _, log_again = run(tmp_path, ["listops"], data_dir=str(data_dir), release=str(tarball))
  assert "not unpacking again" in log_again


def test_release_folder_is_linked(tmp_path):
  release = fake_release(tmp_path / "downloads" / "lra_release", pathfinder=False)
  data_dir = tmp_path / "data"
  outcomes, log = run(tmp_path, ["retrieval", "pathfinder"], data_dir=str(data_dir),
                      release=str(release), preset="tiny")
  assert (data_dir / "lra_release").resolve() == release.resolve()
  assert outcomes["retrieval"].ok
  assert "pathfinder: found 0/3; missing pathfinder32/curv_baseline/metadata" in log


def test_without_release_listops_is_generated_and_retrieval_explains(tmp_path):
  outcomes, _ = run(tmp_path, ["listops", "retrieval"], data_dir=str(tmp_path / "data"),
                    preset="tiny")
  assert outcomes["listops"].ok and "generated into" in outcomes["listops"].message
  generated = list((tmp_path / "cache" / "listops").glob("generated-*/basic_train.tsv"))
  assert len(generated) == 1
  assert not outcomes["retrieval"].ok
  assert "lra_release.gz" in outcomes["retrieval"].message
  assert "--release=" in outcomes["retrieval"].message


def test_tfds_tasks_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    outcomes, _ = run(tmp_path, ["text", "image"], data_dir=str(tmp_path / "tfds"),
                      preset="tiny")
  assert outcomes["text"].ok and "task text: train=20" in outcomes["text"].message
  assert outcomes["image"].ok and "task image: train=18, validation=2" in outcomes["image"].message


def test_tfds_failure_says_what_fixes_it(tmp_path, monkeypatch):
  def offline(self, *args, **kwargs):
    raise ConnectionError("no network")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  outcomes, _ = run(tmp_path, ["text"], data_dir=str(tmp_path / "tfds"))
  message = outcomes["text"].message
  assert not outcomes["text"].ok
  assert "imdb_reviews" in message and "network" in message and str(tmp_path / "tfds") in message


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="unknown"):
    prepare.run(["lisptops"])
  with pytest.raises(ValueError, match="--data_dir"):
    prepare.run(["listops"], release=str(tmp_path))
  not_a_tar = tmp_path / "release.gz"
  not_a_tar.write_text("hello")
  with pytest.raises(ValueError, match="neither a folder nor a tar"):
    prepare.run(["listops"], data_dir=str(tmp_path / "d"), release=str(not_a_tar))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    prepare.run(["listops"], data_dir=str(tmp_path / "d"), release=str(tmp_path / "nope.gz"))
