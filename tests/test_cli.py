"""train.py and eval.py through their flags, in a subprocess, as a user runs them: an override of
an attention setting reaches the mixer; a command-line mistake is one line, no traceback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import pytest

import train
from lra import run_log
from lra.tasks import load_task
from models.attention import registry

ROOT = Path(__file__).resolve().parents[1]
TINY = "--config=configs/performer_listops.py:tiny"


def run(script, *args, cache_dir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", LRA_CACHE_DIR=cache_dir)
  return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_attention_setting_override_reaches_the_mixer(tmp_path, cache_dir):
  # No training steps (the evaluations still build and run the model): a train step's
  # compilation would double this test's time.
  out = run("train.py", TINY, f"--workdir={tmp_path}", "--config.train.num_train_steps=0",
            "--config.model.attention_kwargs.num_features=8",
            "--config.model.attention_kwargs.redraw=false", cache_dir=cache_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  kwargs = json.loads((tmp_path / "config.json").read_text())["model"]["attention_kwargs"]
  assert kwargs["num_features"] == 8 and kwargs["redraw"] is False
  assert kwargs["kernel"] == "softmax"  # the settings not overridden are there too

  # The model built from that config.json has mixers with those settings.
  config = run_log.load_config(tmp_path)
  task = load_task(config)
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, registry.get("performer").mixer):
      seen.append((context.module.num_features, context.module.redraw))
    return next_fun(*args, **kwargs)

  model, batch = train.model_for(config, task), train.example_batch(task, 2)
  with nn.intercept_methods(record):  # traced, not compiled
    jax.eval_shape(lambda: model.init(jax.random.key(0), batch))
  assert seen and set(seen) == {(8, False)}


@pytest.mark.parametrize("script,args,names", [
    # a misspelt attention setting: names it, the nearest one and the valid ones
    ("train.py", [TINY, "--config.model.attention_kwargs.num_featurs=8"],
     ["num_featurs", "did you mean 'num_features'", "kernel"]),
    # a misspelt model field
    ("train.py", [TINY, "--config.model.emb_dm=8"], ["emb_dm", "did you mean 'emb_dim'"]),
    # a value of the wrong type
    ("train.py", [TINY, "--config.model.emb_dim=abc"], ["config.model.emb_dim", "expected int"]),
    # an unknown preset
    ("train.py", ["--config=configs/performer_listops.py:tny"],
     ["unknown config preset 'tny'", "quick, small, tiny"]),
    # an unknown attention name: the registered ones
    ("train.py", [TINY, "--config.model.attention=performr"],
     ["unknown attention 'performr'", "performer"]),
    # eval.py parses the same way
    ("eval.py", [TINY, "--config.model.attention_kwargs.kernal=relu"],
     ["kernal", "did you mean 'kernel'"]),
    # eval.py: an unknown split; a workdir that is no run directory (here: empty)
    ("eval.py", ["--split=dev"], ["--split=dev", "train|validation|test"]),
    ("eval.py", [], ["config.json not found", "run directory of train.py"]),
])
def test_command_line_mistake_is_one_line(script, args, names, tmp_path, cache_dir):
  out = run(script, *args, f"--workdir={tmp_path}", cache_dir=cache_dir)
  assert out.returncode == 2
  assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), out.stderr
  for name in names:
    assert name in lines[0]
  assert not (tmp_path / "config.json").exists()
