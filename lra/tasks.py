"""Task registry: `config.task` -> the `lra/<module>.py` that loads it."""
from __future__ import annotations

import importlib

import ml_collections

from lra.batches import TaskData

# task name -> module in lra/ with `load(config) -> TaskData`. TASKS are the LRA tasks (the
# report's table columns, in LRA Table 1 order); TOKEN_TASKS the token-level tasks of the
# decoder and encoder-decoder modes (TaskData.mode "lm" / "seq2seq"), which no LRA table has.
TASKS = {"listops": "listops", "text": "text", "retrieval": "retrieval", "image": "image",
         "pathfinder": "pathfinder", "pathx": "pathfinder"}
TOKEN_TASKS = {"copy": "copy", "associative_recall": "associative_recall",
               "byte_lm": "byte_lm"}
ALL_TASKS = {**TASKS, **TOKEN_TASKS}


def load_task(config: ml_collections.ConfigDict) -> TaskData:
  """Loads `config.task`'s splits (generating or preparing data where the task allows)."""
  if config.task not in ALL_TASKS:
    raise ValueError(f"unknown task {config.task!r} (config.task); known tasks: "
                     f"{', '.join(ALL_TASKS)}")
  module = importlib.import_module(f"lra.{ALL_TASKS[config.task]}")
  return module.load(config)
