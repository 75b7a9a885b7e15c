"""lra.run_log: metrics.jsonl records (one JSON object a line, step/split/float values), a
reopened log keeping the records up to the restored step and appending after them, a cut or
damaged line on resume, TensorBoard events, atomic JSON writes, the saved config that a resumed
run must match (the differing fields named), load_config's errors, versions and peak RSS."""
import json
import re

import ml_collections
import numpy as np
import pytest

from lra import run_log


def records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def write_steps(workdir, steps, resume_step=0):
  log = run_log.MetricsLog(workdir, resume_step)
  for step in steps:
    log.write(step, "train", {"loss": np.float32(1.0 / step), "accuracy": step / 100})
    if step % 4 == 0:
      log.write(step, "validation", {"accuracy": np.float64(step / 50)})
  log.close()


def test_records_are_one_json_object_a_line(tmp_path):
  write_steps(tmp_path, [2, 4])
  text = (tmp_path / "metrics.jsonl").read_text()
  assert text.endswith("\n") and text.count("\n") == 3
  assert records(tmp_path) == [
      {"step": 2, "split": "train", "loss": 0.5, "accuracy": 0.02},
      {"step": 4, "split": "train", "loss": 0.25, "accuracy": 0.04},
      {"step": 4, "split": "validation", "accuracy": 0.08}]
  for record in records(tmp_path):
    assert type(record["step"]) is int and all(
        type(v) is float for k, v in record.items() if k not in ("step", "split"))
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_each_write_is_on_disk_before_close(tmp_path):
  log = run_log.MetricsLog(tmp_path, 0)
  log.write(1, "train", {"loss": 2.0})
  assert records(tmp_path) == [{"step": 1, "split": "train", "loss": 2.0}]  # a kill now keeps it
  log.close()


def test_resume_keeps_records_up_to_the_step_and_appends(tmp_path):
  write_steps(tmp_path, [2, 4, 6, 8, 10])  # killed after step 10; the checkpoint is at 4
  write_steps(tmp_path, [6, 8], resume_step=4)
  steps = [(r["step"], r["split"]) for r in records(tmp_path)]
  assert steps == [(2, "train"), (4, "train"), (4, "validation"), (6, "train"), (8, "train"),
                   (8, "validation")]  # as an uninterrupted run to step 8 writes them
  write_steps(tmp_path, [10], resume_step=8)  # resumed at the last record: nothing dropped
  assert [r["step"] for r in records(tmp_path)] == [2, 4, 4, 6, 8, 8, 10]
  assert not list(tmp_path.glob("*.tmp"))


def test_resume_without_a_log_starts_one(tmp_path):
  write_steps(tmp_path, [11], resume_step=10)
  assert [r["step"] for r in records(tmp_path)] == [11]


def test_resume_drops_a_last_line_cut_by_a_kill(tmp_path, capsys):
  write_steps(tmp_path, [2, 4])
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 6, "split": "tr')  # the record being written when the run died
  write_steps(tmp_path, [6], resume_step=4)
  assert [(r["step"], r["split"]) for r in records(tmp_path)] == [
      (2, "train"), (4, "train"), (4, "validation"), (6, "train")]
  assert f"{path}:4: unreadable last record dropped" in capsys.readouterr().err


def test_resume_with_a_damaged_line_names_file_and_line(tmp_path):
  write_steps(tmp_path, [2, 4])
  path = tmp_path / "metrics.jsonl"
  lines = path.read_text().splitlines()
  lines[1] = lines[1][:10]
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}:2: ")):
    run_log.MetricsLog(tmp_path, 4)
  assert path.read_text().splitlines() == lines  # nothing rewritten


def test_write_json_is_atomic_and_readable(tmp_path):
  path = tmp_path / "results.json"
  run_log.write_json(path, {"b": 1, "a": tmp_path})
  run_log.write_json(path, {"b": 2, "a": [1.5]})
  assert json.loads(path.read_text()) == {"a": [1.5], "b": 2}
  assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys
  run_log.write_json(path, {"where": tmp_path})  # not JSON-native: written as its str
  assert json.loads(path.read_text()) == {"where": str(tmp_path)}
  assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no .tmp left behind


def make_config(lr=0.1, layers=2):
  return ml_collections.ConfigDict({"task": "listops", "seed": 0,
                                    "train": {"learning_rate": lr, "batch_size": 4},
                                    "model": {"num_layers": layers}})


def test_config_is_saved_then_a_resume_must_match_it(tmp_path):
  run_log.check_or_write_config(tmp_path, make_config())
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"] == {"learning_rate": 0.1, "batch_size": 4}
  run_log.check_or_write_config(tmp_path, make_config())  # the same config: fine
  with pytest.raises(ValueError, match=re.escape(
      f"{tmp_path / 'config.json'}: this workdir was started with a different config (differs "
      "at model.num_layers, train.learning_rate); use a new --workdir")):
    run_log.check_or_write_config(tmp_path, make_config(lr=0.2, layers=3))
  assert json.loads((tmp_path / "config.json").read_text()) == saved  # not overwritten


def test_differing_fields_include_keys_missing_on_one_side():
  a = {"x": 1, "y": {"p": 1, "q": [1, 2]}, "gone": 0}
  b = {"x": 1, "y": {"p": 1, "q": [1, 3], "new": None}, "added": 5}
  assert sorted(run_log.differing_fields(a, b)) == ["added", "gone", "y.q"]
  assert list(run_log.differing_fields(a, a)) == []


def test_load_config_round_trips_locked_and_names_a_missing_file(tmp_path):
  run_log.check_or_write_config(tmp_path, make_config(layers=5))
  config = run_log.load_config(tmp_path)
  assert config.model.num_layers == 5 and config.train.learning_rate == 0.1
  with pytest.raises(AttributeError):
    config.model.misspelt_field = 1  # locked: a typo is an error, not a new field
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"{tmp_path / 'nope' / 'config.json'} not found: is {tmp_path / 'nope'} a run directory")):
    run_log.load_config(tmp_path / "nope")


def test_versions_and_peak_rss():
  found = run_log.versions()
  assert set(found) == {"python", "platform", *run_log.PACKAGES}
  assert found["numpy"] == np.__version__
  assert re.fullmatch(r"3\.\d+\.\d+", found["python"])
  block = np.ones(64 * 2**20, np.uint8)  # touch 64 MiB: the peak is at least that
  assert run_log.peak_rss_bytes() >= block.nbytes
  assert run_log.peak_rss_bytes() < 2**40  # bytes, not KiB read as bytes times 1024 again


def test_versions_of_a_missing_package_is_none(monkeypatch):
  monkeypatch.setattr(run_log, "PACKAGES", ("numpy", "surely-not-installed-pkg"))
  found = run_log.versions()
  assert found["surely-not-installed-pkg"] is None and found["numpy"] == np.__version__


def test_a_settings_group_added_later_with_an_empty_default_is_no_difference():
  # An earlier run's config.json lacks train.param_groups; today's default is an empty group.
  old = {"train": {"learning_rate": 0.1}}
  new = {"train": {"learning_rate": 0.1, "param_groups": {}}}
  assert list(run_log.differing_fields(old, new)) == []
  assert list(run_log.differing_fields(new, old)) == []
  grown = {"train": {"learning_rate": 0.1, "param_groups": {"ssm": {"learning_rate": 1e-3}}}}
  assert list(run_log.differing_fields(old, grown)) == ["train.param_groups"]
  assert list(run_log.differing_fields({"x": 0}, {"x": {}})) == ["x"]  # 0 is not empty
