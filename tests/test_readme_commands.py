"""Every command in a README code block is run here, as written or in a short form.

`EXERCISES` maps each README command (continuation lines joined, trailing comment dropped) to
the commands that exercise it: the same program and flags where that is quick, a `:tiny`
preset, `--dry_run` or `--help` where the real run takes hours or needs the network, and
temporary paths in place of `runs/` and `docs/` outputs. A README command missing from the
table fails `test_every_readme_command_has_an_exercise`, so a new command needs one.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = "python"

# Placeholders: {tmp} a fresh folder per command; {run} the finished :tiny run that the
# eval/report/tensorboard commands read (a sweep-style folder under {runs}).
TINY_RUN = ("python train.py --config=configs/transformer_listops.py:tiny "
            "--workdir={runs}/transformer_listops_seed1 --config.seed=1")
EXERCISES: dict[str, list[str]] = {
    # README "Quick start": the install is what .ci/run does; the run is its :tiny form.
    "pip install -r requirements.txt && python train.py "
    "--config=configs/transformer_listops.py:quick --workdir=runs/quick": [
        "ci-installs requirements.txt", TINY_RUN],
    "pip install -r requirements.txt && python -m pytest -n 2 -q": [
        "ci-installs requirements.txt", "ci-runs python -m pytest -n 2 -q"],
    # Scale out: a real :tiny run with the same switches; the multi-host launches need a
    # cluster: the SLURM path is run by tests/test_parallel.py as a 2-task SLURM step here, the
    # TPU and explicit-flag launches check train.py's flags.
    "python train.py --config=configs/transformer_text.py --workdir=runs/text "
    "--config.model.dtype=bfloat16 --config.train.fsdp=True": [
        "python train.py --config=configs/transformer_listops.py:tiny --workdir={tmp}/run "
        "--config.model.dtype=bfloat16 --config.train.fsdp=True"],
    "srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 python train.py "
    "--config=configs/transformer_pathx.py --workdir=/shared/runs/pathx": [
        "run-by tests/test_parallel.py::test_two_processes_under_jax_distributed_match_one_process",
        "help-of train.py lists --config --workdir"],
    'gcloud compute tpus tpu-vm ssh my-slice --worker=all --command="cd lra-zoo && python '
    'train.py --config=configs/transformer_pathx.py --workdir=/mnt/shared/pathx --distributed"': [
        "help-of train.py lists --config --workdir --distributed"],
    "python train.py --config=configs/transformer_listops.py:quick --workdir=runs/two "
    "--coordinator=10.0.0.1:1234 --num_processes=2 --process_id=0": [
        "python train.py --helpfull"],
    "python benchmarks/input_pipeline.py --tasks=listops,text,retrieval,image,pathfinder,pathx "
    "--workers=0,2 --out=docs/input_pipeline_cpu.json": [
        "python benchmarks/input_pipeline.py --tasks=listops,retrieval --workers=0 --steps=3 "
        "--no_step --out={tmp}/input.json"],
    "python benchmarks/auto_attention.py --lengths=256,512,1024,2048,4096,8192 --repeats=5 "
    "--out=docs/auto_attention_cpu.json": [
        "python benchmarks/auto_attention.py --lengths=64 --repeats=1 --out={tmp}/auto.json"],
    "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0,1,2 --preset=quick "
    "--workdir=runs/precision/float32": [
        "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0,1,2 --preset=quick "
        "--workdir={tmp}/float32 --dry_run"],
    "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0,1,2 --preset=quick "
    "--workdir=runs/precision/bfloat16 --set=model.dtype=bfloat16": [
        "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0,1,2 --preset=quick "
        "--workdir={tmp}/bfloat16 --set=model.dtype=bfloat16 --dry_run"],
    "python -m lra.report --runs=runs/precision/bfloat16 "
    "--collect=docs/precision_listops_quick_bfloat16.json": [
        "python -m lra.report --runs={runs} --collect={tmp}/precision.json"],
    # Training and evaluation.
    "python train.py --config=configs/transformer_listops.py --workdir=runs/transformer_listops":
        [TINY_RUN],
    "python train.py --config=configs/transformer_listops.py:quick --workdir=runs/q "
    "--config.seed=1": [TINY_RUN],
    "python eval.py --workdir=runs/transformer_listops --split=test --checkpoint=best": [
        "python eval.py --workdir={run} --split=test --checkpoint=best",
        "python eval.py --workdir={run} --split=test --checkpoint=last"],
    "tensorboard --logdir=runs/": ["tensorboard-serves {runs}"],
    # Sweeps: the real ones train for hours; --dry_run resolves every run's config.
    "python -m lra.sweep --attention=transformer,performer,linformer --tasks=listops,text "
    "--seeds=0,1,2 --preset=quick --workdir=runs/sweep --jobs=2": [
        "python -m lra.sweep --attention=transformer,performer,linformer --tasks=listops,text "
        "--seeds=0,1,2 --preset=quick --workdir={tmp}/sweep --jobs=2 --dry_run",
        "python -m lra.sweep --attention=all --tasks=all --seeds=0 --preset=tiny "
        "--workdir={tmp}/all --dry_run"],
    "python -m lra.sweep ... --set=train.num_train_steps=500 --set=model.dropout_rate=0.0": [
        "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0 --preset=tiny "
        "--workdir={tmp}/sweep --set=train.num_train_steps=500 --set=model.dropout_rate=0.0 "
        "--dry_run"],
    "python -m lra.sweep ... --dry_run": [
        "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0 --preset=tiny "
        "--workdir={runs} --dry_run"],
    "python -m lra.sweep ... --launcher=slurm --slurm_partition=gpu --slurm_gpus=1 "
    "--slurm_time_min=600": [
        "python -m lra.sweep --attention=transformer --tasks=listops --seeds=0 --preset=tiny "
        "--workdir={tmp}/sweep --launcher=slurm --slurm_partition=gpu --slurm_gpus=1 "
        "--slurm_time_min=600 --dry_run"],
    "python -m lra.sweep --attention=all --tasks=listops --seeds=0,1,2 --preset=small "
    "--workdir=runs/small_listops --jobs=2": [
        "python -m lra.sweep --attention=all --tasks=listops --seeds=0,1,2 --preset=small "
        "--workdir={tmp}/small --jobs=2 --dry_run"],
    # Reports over the finished :tiny run.
    "python -m lra.report --runs=runs/sweep": ["python -m lra.report --runs={runs}"],
    "python -m lra.report --runs=runs/sweep --published --out=report.md": [
        "python -m lra.report --runs={runs} --published --out={tmp}/report.md"],
    "python -m lra.report --runs=runs/sweep --format=latex": [
        "python -m lra.report --runs={runs} --format=latex",
        "python -m lra.report --runs={runs} --format=csv"],
    "python -m lra.report --runs=runs/sweep --collect=sweep_results.json": [
        "python -m lra.report --runs={runs} --collect={runs}/../sweep_results.json"],
    "python -m lra.report --runs=sweep_results.json": [
        "python -m lra.report --runs={runs}/../sweep_results.json"],
    "python -m lra.report --runs=runs/sweep --select=best_validation": [
        "python -m lra.report --runs={runs} --select=best_validation"],
    "python -m lra.report --runs=runs/sweep --bench=bench.json --bench_length=4096 "
    "--plot=fig3.png --curves=curves.png": [
        "python -m lra.report --runs={runs} --bench=docs/benchmark.json --bench_length=4096 "
        "--plot={tmp}/fig3.png --curves={tmp}/curves.png"],
    "python -m lra.report --runs=runs/small_listops --published --bench=docs/benchmark.json "
    "--bench_length=4096 --plot=docs/small_listops_fig3.png "
    "--curves=docs/small_listops_curves.png --out=docs/small_listops_report.md": [
        "python -m lra.report --runs={runs} --published --bench=docs/benchmark.json "
        "--bench_length=4096 --plot={tmp}/fig3.png --curves={tmp}/curves.png "
        "--out={tmp}/report.md"],
    "python -m lra.sweep --attention=all --tasks=listops --seeds=0 --preset=quick "
    "--workdir=runs/quick_listops": [
        "python -m lra.sweep --attention=all --tasks=listops --seeds=0 --preset=quick "
        "--workdir={tmp}/quick --dry_run"],
    "python -m lra.report --runs=runs/quick_listops --collect=docs/quick_listops_results.json "
    "--out=docs/quick_listops_report.md": [
        "python -m lra.report --runs={runs} --collect={tmp}/results.json --out={tmp}/report.md"],
    # Data: the TFDS sets and the release need the network; tests/test_prepare.py runs the
    # preparation on fixtures, here the command line itself.
    "python -m lra.prepare --tasks=listops,text,retrieval,image,pathfinder,pathx "
    "--data_dir=~/lra_data --release=~/Downloads/lra_release.gz": [
        "python -m lra.prepare --helpfull",
        "python -m lra.prepare --tasks=listops,text,retrieval,image,pathfinder,pathx "
        "--data_dir={tmp}/data --release={tmp}/missing_release.gz --expect_failure"],
    # Benchmarks: the full run takes hours; the same flags at one short length.
    "python -m lra.benchmark --attention=all --lengths=1024,2048,4096,8192 --batch=2 "
    "--out=bench.json --markdown=bench.md --plot=bench.png": [
        "python -m lra.benchmark --helpfull",
        "python -m lra.benchmark --attention=local --lengths=64 --batch=2 --out={tmp}/bench.json "
        "--markdown={tmp}/bench.md --plot={tmp}/bench.png"],
    "python -m lra.benchmark --attention=s4d,s5,lru,mega,h3,hyena,long_conv,sgconv,transformer "
    "--lengths=1024,2048,4096,8192 --exact=blocked --out=docs/benchmark_sequence.json": [
        "python -m lra.benchmark --attention=s4d --lengths=32 --exact=blocked "
        "--out={tmp}/bench.json"],
    "python -m lra.benchmark --attention=memory_compressed,axial,routing,long_short,skyformer,"
    "h_transformer_1d,rfa,cosformer,luna,isab,fnet,aft,transformer --lengths=4096,8192 "
    "--repeats=2 --exact=blocked --out=docs/benchmark_zoo2.json --markdown=docs/benchmark_zoo2.md": [
        "python -m lra.benchmark --attention=luna,routing,fnet --lengths=32 --repeats=1 "
        "--exact=blocked --out={tmp}/bench.json --markdown={tmp}/bench.md"],
    # Head, position and block options: the same switches on the :tiny preset (2 heads: one
    # key/value head is multi-query there).
    "python train.py --config=configs/performer_listops.py:quick --workdir=runs/performer_gqa "
    "--config.model.num_kv_heads=2 --config.model.rope=True --config.model.ffn=gated "
    "--config.model.activation=silu": [
        "python train.py --config=configs/performer_listops.py:tiny --workdir={tmp}/run "
        "--config.model.num_kv_heads=1 --config.model.rope=True --config.model.ffn=gated "
        "--config.model.activation=silu"],
    # Decoder and encoder-decoder tasks: the same configs at their :tiny preset.
    "python train.py --config=configs/transformer_copy.py:quick --workdir=runs/copy": [
        "python train.py --config=configs/transformer_copy.py:tiny --workdir={tmp}/run"],
    "python train.py --config=configs/transformer_associative_recall.py:quick "
    "--workdir=runs/recall": [
        "python train.py --config=configs/transformer_associative_recall.py:tiny "
        "--workdir={tmp}/run"],
    "python train.py --config=configs/transformer_byte_lm.py:quick --workdir=runs/byte_lm": [
        "python train.py --config=configs/transformer_byte_lm.py:tiny --workdir={tmp}/run"],
    "python train.py --config=configs/transformer_xl_byte_lm.py:quick --workdir=runs/byte_lm_xl": [
        "python train.py --config=configs/transformer_xl_byte_lm.py:tiny --workdir={tmp}/run"],
    # The decode benchmark: the same flags, two variants at one short length, tiny widths.
    "python -m lra.benchmark --mode=decode --attention=all --lengths=1024,2048,4096,8192 "
    "--batch=1 --num_layers=1 --repeats=1 --timeout=300 --out=docs/benchmark_decode.json "
    "--markdown=docs/benchmark_decode.md": [
        "python -m lra.benchmark --mode=decode --attention=linear_transformer,reformer "
        "--lengths=16 --batch=1 --num_layers=1 --repeats=1 --timeout=600 --emb_dim=16 "
        "--qkv_dim=16 --num_heads=2 --mlp_dim=32 --out={tmp}/decode.json "
        "--markdown={tmp}/decode.md"],
    "python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy": [
        "offline installs torch from the network"],
    "/tmp/torchenv/bin/python benchmarks/torch_attention.py --lengths=4096,8192 "
    "--out=torch.json --compare=bench_attention.json": [
        "python benchmarks/torch_attention.py --help",
        "python benchmarks/torch_attention.py --torch_rows=docs/torch_attention.json "
        "--compare=docs/benchmark_attention_only.json"],
}


def readme_commands() -> list[str]:
  """Commands in the README's bash code blocks: continuations joined, comments dropped."""
  text = (ROOT / "README.md").read_text()
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#.*$", "", line).strip()
      if line:
        commands.append(" ".join(line.split()))
  return commands


def test_every_readme_command_has_an_exercise():
  commands = readme_commands()
  assert len(commands) >= 15, "README code blocks not found"
  missing = [c for c in commands if c not in EXERCISES]
  assert not missing, f"README commands with no exercise in this file: {missing}"
  stale = [c for c in EXERCISES if c not in commands]
  assert not stale, f"exercises for commands no longer in the README: {stale}"


def _env(cache_dir):
  return dict(os.environ, JAX_PLATFORMS="cpu", LRA_CACHE_DIR=cache_dir)


def _run(command: str, cache_dir: str, check: bool = True) -> subprocess.CompletedProcess:
  argv = shlex.split(command)
  if argv[0] == PY:
    argv[0] = sys.executable
  done = subprocess.run(argv, cwd=ROOT, env=_env(cache_dir), capture_output=True, text=True,
                        timeout=600)
  if check:
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
  return done


def _tensorboard_serves(logdir: Path, cache_dir: str):
  binary = Path(sys.executable).with_name("tensorboard")
  process = subprocess.Popen([str(binary), f"--logdir={logdir}", "--port=0"], cwd=ROOT,
                             env=_env(cache_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
  seen = []
  deadline = time.monotonic() + 120
  try:
    for line in process.stdout:
      seen.append(line)
      if "http://" in line or time.monotonic() > deadline:
        break
  finally:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
  assert any("TensorBoard" in line and "http://" in line for line in seen), "".join(seen)


def _ci_text() -> str:
  return (ROOT / ".ci" / "run").read_text()


def _needs_a_finished_run(readme_command: str) -> bool:
  return any("{run" in e or e.startswith("tensorboard") for e in EXERCISES[readme_command])


def _exercise(readme_command: str, exercise: str, tmp_path: Path, runs: Path, cache: str):
  if exercise.startswith("ci-installs "):
    assert f"pip install --quiet --disable-pip-version-check -r {exercise.split()[1]}" in (
        _ci_text())
  elif exercise.startswith("ci-runs "):
    assert exercise.removeprefix("ci-runs ") in _ci_text()
  elif exercise.startswith("run-by "):  # a test runs this path (named so it cannot rot)
    path, _, name = exercise.removeprefix("run-by ").partition("::")
    assert f"def {name}(" in (ROOT / path).read_text(), exercise
  elif exercise.startswith("help-of "):  # `help-of train.py lists --a --b`
    program, _, flags = exercise.removeprefix("help-of ").partition(" lists ")
    done = _run(f"{PY} {program} --helpfull", cache, check=False)
    for flag in flags.split():
      assert re.search(rf"--(\[no\])?{flag[2:]}\b", done.stdout + done.stderr), (exercise, flag)
  elif exercise.startswith("tensorboard-serves"):
    _tensorboard_serves(runs, cache)
  elif exercise.startswith("offline "):
    # Installing torch needs the network (not run); the version it pins must be the one the
    # committed torch rows were measured with. The torch benchmark's own flags run below it.
    import json  # pylint: disable=import-outside-toplevel
    pinned = re.search(r"torch==([\w.]+)", readme_command).group(1)
    rows = json.loads((ROOT / "docs" / "torch_attention.json").read_text())
    assert {row["torch"].split("+")[0] for row in rows} == {pinned}, (pinned, rows[0]["torch"])
  else:
    expect_failure = exercise.endswith(" --expect_failure")
    command = exercise.removesuffix(" --expect_failure").format(
        tmp=tmp_path, runs=runs, run=runs / "transformer_listops_seed1")
    if command == TINY_RUN.format(runs=runs):
      return  # the fixture ran it; the eval, report and tensorboard exercises read its output
    if "--help" in command:  # absl's help exits with status 1
      done = _run(command, cache, check=False)
      assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr[-2000:]
      text = done.stdout + done.stderr
      for flag in re.findall(r"--(\w+)=", readme_command):  # the README's flags all exist
        assert re.search(rf"--(\[no\])?{flag}\b", text), f"{command}: no --{flag} in its help"
      return
    done = _run(command, cache, check=not expect_failure)
    if expect_failure:  # a clear one-line reason naming what is missing, not a traceback
      assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
      assert "missing_release.gz" in done.stderr + done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("readme_command",
                         [c for c in EXERCISES if not _needs_a_finished_run(c)])
def test_readme_command_runs(readme_command, tmp_path, cache_dir):
  for exercise in EXERCISES[readme_command]:
    _exercise(readme_command, exercise, tmp_path, tmp_path / "runs", cache_dir)


def test_readme_commands_over_a_finished_run(tmp_path, cache_dir):
  """One :tiny training run (the README's train commands), then every command that reads it."""
  runs = tmp_path / "runs"
  _run(TINY_RUN.format(runs=runs), cache_dir)
  assert (runs / "transformer_listops_seed1" / "results.json").is_file()
  for readme_command in EXERCISES:
    if _needs_a_finished_run(readme_command):
      for number, exercise in enumerate(EXERCISES[readme_command]):
        scratch = tmp_path / f"scratch{abs(hash(readme_command))}_{number}"
        scratch.mkdir()
        _exercise(readme_command, exercise, scratch, runs, cache_dir)


# The README's inline `attention_kwargs` override examples: flags -> (variant, setting, value).
OVERRIDE_EXAMPLES = {
    "--config.model.attention_kwargs.num_features=512": ("performer", "num_features", 512),
    "--config.model.attention_kwargs.global_positions=0,5": (
        "longformer", "global_positions", (0, 5)),
    "--config.model.attention_kwargs.mixture=dense --config.model.attention_kwargs.mixture=random":
        ("synthesizer", "mixture", ("dense", "random")),
}


def test_readme_attention_kwargs_examples_reach_the_config():
  from lra import sweep  # pylint: disable=import-outside-toplevel
  spans = [" ".join(span.split()) for span in re.findall(
      r"`(--config\.model\.attention_kwargs\.[^`]+)`", (ROOT / "README.md").read_text())]
  assert set(OVERRIDE_EXAMPLES) <= set(spans), spans
  forms = dict(OVERRIDE_EXAMPLES)
  forms["--config.model.attention_kwargs.global_positions=(0, 5)"] = (  # the README's `'(0, 5)'`
      "longformer", "global_positions", (0, 5))
  for flags_text, (variant, setting, value) in forms.items():
    flags_list = [flags_text] if "(0, 5)" in flags_text else flags_text.split()
    sets = [flag.removeprefix("--config.") for flag in flags_list]
    config = sweep.resolve_config(sweep.Run(variant, "listops", 0), "tiny", sets)
    assert config.model.attention_kwargs[setting] == value, (flags_text, config.model)
  with pytest.raises(ValueError, match="linformer"):  # README: switching variant by flag fails
    config = sweep.resolve_config(sweep.Run("performer", "listops", 0), "tiny",
                                  ["model.attention=linformer"])
    from models.attention import registry  # pylint: disable=import-outside-toplevel
    registry.build_mixer(config.model.attention, config.model.attention_kwargs)
