"""Evaluates a trained run: `python eval.py --workdir=runs/x [--split=test] [--checkpoint=best]`.

Restores the run's config (or `--config`) and its best or last checkpoint, evaluates one
split and records the result under "eval" in the run's results.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

import train
from lra import run_log
from lra.checkpoints import RunCheckpoints
from lra.tasks import load_task

SPLITS = ("train", "validation", "test")


def evaluate_run(workdir: str | Path, split: str = "test", checkpoint: str = "best",
                 config: ml_collections.ConfigDict | None = None) -> dict:
  workdir = Path(workdir)
  if split not in SPLITS:
    raise ValueError(f"--split={split!r}; expected one of {SPLITS}")
  if checkpoint not in ("best", "last"):
    raise ValueError(f"--checkpoint={checkpoint!r}; expected 'best' or 'last'")
  config = config or run_log.load_config(workdir)
  task = load_task(config)
  model = train.model_for(config, task)
  state = train.create_state(config, task, model)
  checkpoints = RunCheckpoints(workdir, config.train.keep_checkpoints)
  which = "best" if checkpoint == "best" else "latest"
  restored = checkpoints.restore(which, state)
  if restored is None and which == "best":
    which, restored = "latest", checkpoints.restore("latest", state)
  checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'} or {workdir / 'best'}; "
                            f"train first: python train.py --config=... --workdir={workdir}")
  state, _, step = restored
  steps = train.Steps(state, config.train.batch_size)
  started = time.time()
  result = train.evaluate(steps, steps.put_state(state).variables, task.splits[split],
                          config.train.batch_size)
  result.update(checkpoint="best" if which == "best" else "last", step=int(step),
                eval_time_s=time.time() - started)
  path = workdir / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  results.setdefault("eval", {})[split] = result
  run_log.write_json(path, results)
  return result


def main():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  from configs import defaults  # pylint: disable=import-outside-toplevel
  from lra import cli  # pylint: disable=import-outside-toplevel

  config_flags.DEFINE_config_file("config", None, "Optional; default: the run's config.json",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The run directory written by train.py.")
  flags.DEFINE_enum("split", "test", SPLITS, "Split to evaluate.")
  flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint to restore.")
  flags.mark_flag_as_required("workdir")

  def run(argv):
    if len(argv) > 1:
      cli.fail(f"unexpected arguments {argv[1:]}; flags are written --name=value")
    absl_logging.set_verbosity(absl_logging.WARNING)
    f = flags.FLAGS
    if f.config is not None:
      try:  # an unknown attention or setting is a one-line error, before anything is loaded
        defaults.check_attention(f.config.model)
      except ValueError as error:
        cli.fail(error)
    try:
      result = evaluate_run(f.workdir, f.split, f.checkpoint, f.config)
    except FileNotFoundError as error:  # no run directory, config.json or checkpoint
      cli.fail(error)
    print(f"{f.split} accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}, "
          f"{result['examples']} examples; {result['checkpoint']} checkpoint, step "
          f"{result['step']}); written to {Path(f.workdir) / 'results.json'}")

  app.run(run, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  main()
