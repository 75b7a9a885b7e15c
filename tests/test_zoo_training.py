"""Every registered variant trains end to end through the one loop (ListOps, `:tiny`),
from its own config file."""
import importlib
import json
import math
from pathlib import Path

import pytest

import train
from models.attention import registry


def test_every_variant_has_a_config_for_every_task():
  tasks = sorted(p.stem[len("base_"):] for p in Path("configs").glob("base_*.py"))
  missing = [f"configs/{name}_{task}.py" for name in registry.names() for task in tasks
             if not Path(f"configs/{name}_{task}.py").exists()]
  assert not missing, missing


@pytest.mark.parametrize("name", registry.names())
def test_variant_trains_on_listops(name, tmp_path, cache_dir):
  config = importlib.import_module(f"configs.{name}_listops").get_config("tiny")
  assert config.model.attention == name
  config.cache_dir = cache_dir
  results = train.train_and_evaluate(config, tmp_path)
  assert results["steps"] == config.train.num_train_steps
  assert math.isfinite(results["splits"]["test"]["loss"])
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert all(math.isfinite(r["loss"]) for r in records)
