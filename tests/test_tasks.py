"""lra.tasks: the registry covers exactly the tasks the configs name, `load_task` hands the config
to the right module (Path-X to Pathfinder), an unknown name is an error listing the known ones,
and the metadata a task loads with matches LRA's task formats (lra/data/lra_tasks.md): vocabulary,
classes, length, pair. Text and Image (TFDS) metadata are checked under tfds mock data in
tests/test_text.py and tests/test_image.py; here the four tasks that load without TFDS."""
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

from lra import batches, tasks

ROOT = Path(__file__).resolve().parents[1]
ALL_TASKS = {"listops", "text", "retrieval", "image", "pathfinder", "pathx"}
TOKEN_TASKS = {"copy", "associative_recall", "byte_lm"}


def base_config(task, preset=None):
  return importlib.import_module(f"configs.base_{task}").get_config(preset)


def test_registry_is_exactly_the_tasks_the_configs_name():
  assert set(tasks.TASKS) == ALL_TASKS  # the LRA tasks (the report's columns)
  assert set(tasks.TOKEN_TASKS) == TOKEN_TASKS
  named = {base_config(path.stem[len("base_"):]).task
           for path in (ROOT / "configs").glob("base_*.py")}
  assert named == ALL_TASKS | TOKEN_TASKS
  for module in set(tasks.ALL_TASKS.values()):
    assert callable(importlib.import_module(f"lra.{module}").load)


@pytest.mark.parametrize("task,module", [("listops", "listops"), ("text", "text"),
                                         ("retrieval", "retrieval"), ("image", "image"),
                                         ("pathfinder", "pathfinder"), ("pathx", "pathfinder")])
def test_load_task_calls_its_modules_load_with_the_config(monkeypatch, task, module):
  calls = []
  for name in set(tasks.TASKS.values()):
    monkeypatch.setattr(importlib.import_module(f"lra.{name}"), "load",
                        lambda config, name=name: calls.append((name, config)) or name)
  config = base_config(task, "tiny")
  assert tasks.load_task(config) == module
  assert calls == [(module, config)]


def test_unknown_task_is_an_error_listing_the_known_ones():
  config = base_config("pathfinder", "tiny")
  with config.unlocked():
    config.task = "pathfindr"
  with pytest.raises(ValueError, match=re.escape(
      "unknown task 'pathfindr' (config.task); known tasks: listops, text, retrieval, image, "
      "pathfinder, pathx")):
    tasks.load_task(config)


# lra/data/lra_tasks.md: ListOps digits 0-9, [MIN [MAX [MED [SM, X, plus padding, 10 classes;
# Retrieval byte-level pairs, 2 classes (our byte ids are 1..256, 0 padding: 257);
# Pathfinder / Path-X gray levels 0-255 as tokens, 2 classes.
EXPECTED = {"listops": (16, 10, False), "retrieval": (257, 2, True),
            "pathfinder": (256, 2, False), "pathx": (256, 2, False)}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_loaded_metadata_matches_the_lra_task_formats(task):
  config = base_config(task, "tiny")  # generated / synthetic data, seconds
  data = tasks.load_task(config)
  assert data.name == config.task
  assert (data.vocab_size, data.num_classes, data.pair) == EXPECTED[task]
  assert data.max_length == config.data.max_length
  assert set(data.splits) == {"train", "validation", "test"}
  for split in data.splits.values():
    batch = next(batches.eval_batches(split, 8))
    fields = {"inputs", "mask", "targets", "valid"} | ({"inputs2", "mask2"} if data.pair else set())
    assert set(batch) == fields
    assert batch["inputs"].shape == (8, data.max_length)
    assert 0 <= batch["inputs"].min() and batch["inputs"].max() < data.vocab_size
    targets = np.asarray(split.targets)
    assert 0 <= targets.min() and targets.max() < data.num_classes
  counts = data.splits["train"].label_counts(data.num_classes)
  assert len(counts) == data.num_classes and counts.sum() == len(data.splits["train"])
