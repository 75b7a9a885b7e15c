"""eval.py restores a run's checkpoint and records the evaluation in results.json."""
import json

import pytest

import eval as eval_lib
import train
from configs import transformer_listops


def test_eval_restores_last_and_best(tmp_path, cache_dir):
  config = transformer_listops.get_config("tiny")
  config.cache_dir = cache_dir
  results = train.train_and_evaluate(config, tmp_path)
  last = eval_lib.evaluate_run(tmp_path, "test", "last")
  assert last["accuracy"] == pytest.approx(results["splits"]["test"]["accuracy"])
  assert last["loss"] == pytest.approx(results["splits"]["test"]["loss"], rel=1e-6)
  assert last["step"] == 12 and last["checkpoint"] == "last"
  best = eval_lib.evaluate_run(tmp_path, "validation", "best")
  assert best["step"] == results["best_validation"]["best_step"]
  assert best["accuracy"] == pytest.approx(results["best_validation"]["best_accuracy"])
  recorded = json.loads((tmp_path / "results.json").read_text())
  assert recorded["eval"]["test"]["checkpoint"] == "last"
  assert recorded["eval"]["validation"]["checkpoint"] == "best"
  assert recorded["splits"] == json.loads(json.dumps(results["splits"]))  # kept


def test_eval_without_a_run_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    eval_lib.evaluate_run(tmp_path)
