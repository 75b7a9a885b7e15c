"""Task registry: `config.task` -> the `lra/<module>.py` that loads it."""
from __future__ import annotations

import importlib

import ml_collections

from lra.batches import TaskData

# task name -> module in lra/ with `load(config) -> TaskData`
TASKS = {"listops": "listops", "text": "text", "retrieval": "retrieval", "image": "image",
         "pathfinder": "pathfinder", "pathx": "pathfinder"}


def load_task(config: ml_collections.ConfigDict) -> TaskData:
  """Loads `config.task`'s splits (generating or preparing data where the task allows)."""
  if config.task not in TASKS:
    raise ValueError(f"unknown task {config.task!r} (config.task); known tasks: "
                     f"{', '.join(TASKS)}")
  module = importlib.import_module(f"lra.{TASKS[config.task]}")
  return module.load(config)
