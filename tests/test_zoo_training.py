"""Every registered variant trains end to end through the one loop (ListOps, `:tiny`), from
its own config file, in bfloat16 with dropout and attention dropout on: the run
`train.py --config=configs/<name>_listops.py:tiny --config.model.dtype=bfloat16`.

bfloat16 is the stricter dtype (every mixer must keep it through its scans, masks and
dropout); float32 end to end is covered by tests/test_train.py and every mixer's float32
behaviour by tests/test_attention.py. One run per variant keeps this file's cost (the
compiles) at one train step and one evaluation step per variant.
"""
import dataclasses
import importlib
import json
import math
from pathlib import Path

import pytest

import train
from models.attention import registry


def test_every_variant_has_a_config_for_every_task():
  """Every variant for the LRA tasks; the token tasks (a causal decoder) every causal one."""
  from lra.tasks import TASKS, TOKEN_TASKS  # pylint: disable=import-outside-toplevel
  tasks = sorted(p.stem[len("base_"):] for p in Path("configs").glob("base_*.py"))
  assert set(tasks) == set(TASKS) | set(TOKEN_TASKS)
  missing = [f"configs/{name}_{task}.py" for name in registry.names() for task in tasks
             if (task in TASKS or registry.get(name).supports_causal)
             and not Path(f"configs/{name}_{task}.py").exists()]
  assert not missing, missing


def train_tiny_listops_in_bfloat16(name, workdir, cache_dir, **model_overrides):
  config = importlib.import_module(f"configs.{name}_listops").get_config("tiny")
  assert config.model.attention == name
  assert config.model.dropout_rate > 0
  # Attention dropout too, except where the variant forms no attention weights (set to 0).
  declared = {f.name for f in dataclasses.fields(registry.get(name).mixer)}
  assert (config.model.attention_dropout_rate > 0) == ("dropout_rate" in declared), name
  config.model.dtype = "bfloat16"
  for field, value in model_overrides.items():
    if field in config.model.attention_kwargs:
      config.model.attention_kwargs[field] = value
    else:
      config.model[field] = value
  config.cache_dir = cache_dir
  results = train.train_and_evaluate(config, workdir)
  assert results["steps"] == config.train.num_train_steps
  assert math.isfinite(results["splits"]["test"]["loss"])
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert records and all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize("name", registry.names())
def test_variant_trains_on_listops_in_bfloat16(name, tmp_path, cache_dir):
  train_tiny_listops_in_bfloat16(name, tmp_path, cache_dir)


@pytest.mark.parametrize("name,overrides", [
    ("transformer", {"implementation": "blocked", "block_q": 8, "block_k": 8}),  # crashed (dropout)
    ("performer", {"causal": True, "kernel": "relu"}),                 # crashed (scan carry)
])
def test_non_default_paths_train_in_bfloat16(name, overrides, tmp_path, cache_dir):
  """End to end, the settings whose bfloat16 training crashed (issue 9)."""
  train_tiny_listops_in_bfloat16(name, tmp_path, cache_dir, **overrides)
