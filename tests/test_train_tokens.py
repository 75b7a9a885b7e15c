"""train.py on the token-level tasks (decoder LM, encoder-decoder): the loss and metrics count
only the target tokens `weights` marks, evaluation skips padded rows, and a tiny run of each
mode writes token accuracy, sequence accuracy and bits per token (per byte for byte_lm)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

import train
from configs import transformer_byte_lm, transformer_copy


def logits_for(predicted, vocab=5, confidence=4.0):
  """Logits `[B, T, vocab]` whose argmax is `predicted`."""
  return confidence * jnp.eye(vocab)[jnp.asarray(predicted)]


def test_row_metrics_count_only_the_weighted_target_tokens():
  targets = jnp.array([[1, 2, 3, 0], [4, 4, 0, 0]])
  weights = jnp.array([[True, True, True, False], [True, False, False, False]])
  predicted = jnp.array([[1, 2, 0, 3], [4, 0, 1, 1]])  # row 0: 2 of 3 right; row 1: 1 of 1
  rows = train.row_metrics(logits_for(predicted), {"targets": targets, "weights": weights})
  np.testing.assert_allclose(rows["correct"], [2.0, 1.0])
  np.testing.assert_allclose(rows["count"], [3.0, 1.0])
  np.testing.assert_allclose(rows["exact"], [0.0, 1.0])  # an unweighted wrong token is fine
  one_token = train.cross_entropy(logits_for(jnp.array([0])), jnp.array([0]))[0]
  wrong_token = train.cross_entropy(logits_for(jnp.array([0])), jnp.array([1]))[0]
  np.testing.assert_allclose(rows["loss_sum"], [2 * one_token + wrong_token, one_token],
                             rtol=1e-6)


def test_eval_step_sums_over_valid_rows_only():
  targets = jnp.array([[1, 2], [3, 4], [1, 1]])
  weights = jnp.array([[True, True], [True, False], [True, True]])
  predicted = jnp.array([[1, 2], [0, 4], [0, 0]])
  batch = {"targets": targets, "weights": weights, "valid": jnp.array([True, True, False])}
  sums = train.eval_step({}, batch, lambda variables, batch, deterministic: (
      logits_for(predicted), {}))
  assert float(sums["count"]) == 3.0 and float(sums["rows"]) == 2.0
  assert float(sums["correct"]) == 2.0 and float(sums["exact"]) == 1.0


@pytest.mark.parametrize("module,unit", [(transformer_copy, "token"),
                                         (transformer_byte_lm, "byte")])
def test_tiny_token_task_run_reports_token_and_sequence_metrics(module, unit, tmp_path,
                                                                cache_dir):
  config = module.get_config("tiny")
  config.cache_dir = cache_dir
  results = train.train_and_evaluate(config, tmp_path)
  test = results["splits"]["test"]
  assert 0.0 <= test["accuracy"] <= 1.0 and 0.0 <= test["sequence_accuracy"] <= 1.0
  assert test["tokens"] >= test["examples"] > 0
  assert test["bits_per_token"] == pytest.approx(test["loss"] / math.log(2))
  assert ("bits_per_byte" in test) == (unit == "byte")
  assert 0.0 < results["test_majority_class_rate"] < 1.0
