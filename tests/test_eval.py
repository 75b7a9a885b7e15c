"""eval.py restores a run's checkpoint and records the evaluation in results.json; the
evaluation counts only the real rows of a padded last batch."""
import json
import shutil

import jax
import numpy as np
import pytest

import eval as eval_lib
import train
from configs import transformer_listops
from lra import batches as batch_lib
from lra.checkpoints import RunCheckpoints


def tiny_config(cache_dir):
  config = transformer_listops.get_config("tiny")
  config.cache_dir = cache_dir
  return config


def direct_metrics(model, params, split):
  """Accuracy and mean cross-entropy over the split in one unpadded batch, written here
  without train.evaluate / train.eval_step (the code under test)."""
  batch = split.batch(np.arange(len(split)))
  targets = batch.pop("targets")
  logits, _ = model.apply({"params": params}, batch, deterministic=True)
  log_probs = np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1))
  loss = -np.take_along_axis(log_probs, targets[:, None], axis=-1).mean()
  return float((np.asarray(logits).argmax(-1) == targets).mean()), float(loss)


def test_eval_restores_last_and_best(tmp_path, cache_dir):
  config = tiny_config(cache_dir)
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

  # The run learned: every parameter array moved from its initial value, the loss fell.
  task = train.load_task(config)
  initial = train.create_state(config, task, train.model_for(config, task))
  checkpoints = RunCheckpoints(tmp_path)
  trained, _, _ = checkpoints.restore("latest", initial)
  checkpoints.close()
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(initial.params),
                                                 jax.tree_util.tree_leaves(trained.params))]
  assert all(moved), f"{moved.count(False)} of {len(moved)} parameter arrays never changed"
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train_loss = [r["loss"] for r in records if r["split"] == "train"]
  assert train_loss[-1] < train_loss[0] - 0.05, train_loss

  # --checkpoint=best in a run without a best checkpoint falls back to the latest one.
  shutil.rmtree(tmp_path / "best")
  fallback = eval_lib.evaluate_run(tmp_path, "test", "best")
  assert fallback["checkpoint"] == "last" and fallback["step"] == 12
  assert fallback["accuracy"] == pytest.approx(results["splits"]["test"]["accuracy"])
  assert fallback["loss"] == pytest.approx(results["splits"]["test"]["loss"], rel=1e-6)


def test_eval_without_a_run_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    eval_lib.evaluate_run(tmp_path)
  with pytest.raises(FileNotFoundError, match="config.json"):
    eval_lib.evaluate_run(tmp_path / "no_such_run")


def test_eval_names_a_bad_split_or_checkpoint(tmp_path):
  with pytest.raises(ValueError, match=r"--split='dev'; expected one of .*'validation'"):
    eval_lib.evaluate_run(tmp_path, split="dev")
  with pytest.raises(ValueError, match=r"--checkpoint='final'; expected 'best' or 'last'"):
    eval_lib.evaluate_run(tmp_path, checkpoint="final")


def test_padded_last_batch_counts_only_the_real_examples(cache_dir):
  """13 examples in batches of 4: the last batch holds 1 real row and 3 padding rows (copies
  of row 0). Accuracy and loss must be those of the 13 examples, counted here directly."""
  config = tiny_config(cache_dir)
  task = train.load_task(config)
  model = train.model_for(config, task)
  state = train.create_state(config, task, model)
  test = task.splits["test"]
  rows = np.arange(1, 14)
  split = batch_lib.Split("test13", test.inputs[rows], test.lengths[rows], test.targets[rows])
  # Make the padding row's prediction wrong and the others partly right, so that counting the
  # padding rows would move the accuracy: targets are set from the model's own predictions.
  batch = split.batch(np.arange(13))
  logits, _ = model.apply({"params": state.params}, batch, deterministic=True)
  predicted = np.asarray(logits).argmax(-1)
  targets = predicted.copy()
  targets[0] = (predicted[0] + 1) % task.num_classes
  targets[7:12] = (predicted[7:12] + 1) % task.num_classes  # 7 of 13 right
  split.targets = targets.astype(np.int32)

  steps = train.Steps(state, 4)
  result = train.evaluate(steps, steps.put_state(state).variables, split, 4)
  accuracy, loss = direct_metrics(model, state.params, split)
  assert accuracy == pytest.approx(7 / 13)
  assert result["examples"] == 13
  assert result["accuracy"] == pytest.approx(accuracy)
  assert result["loss"] == pytest.approx(loss, rel=1e-5)
