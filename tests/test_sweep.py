"""lra.sweep: real train.py runs in subprocesses, killed and resumed, crashing, on submitit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from absl import flags

from lra import run_log, sweep

ROOT = Path(__file__).resolve().parents[1]
SETS = ["train.eval_every=100", "train.log_every=50"]
TINY = ["--tasks=listops", "--preset=tiny", *(f"--set={s}" for s in SETS)]


def sweep_cmd(workdir: Path, *args: str) -> list[str]:
  return [sys.executable, "-m", "lra.sweep", f"--workdir={workdir}", *TINY, *args]


def last_states(workdir: Path) -> dict[str, dict]:
  return sweep.Index(workdir).states()


def run_in_process(workdir: Path, *args: str) -> int:
  """sweep.main with these flags, in this process (so a test can replace train_command)."""
  sweep.define_flags()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["lra.sweep", f"--workdir={workdir}", *TINY, *args])
  try:
    return sweep.main([])
  finally:
    flags.FLAGS.unparse_flags()


def test_sigkill_of_the_sweep_then_restart_skips_done_runs_and_resumes_the_cut_ones(tmp_path):
  """2 variants x 1 task x 2 seeds, 2 at a time; SIGKILL once a run is done and a running one
  has a checkpoint at step 300 or less."""
  workdir = tmp_path / "sweep"
  args = ["--attention=transformer,local", "--seeds=0,1", "--jobs=2",
          "--set=train.num_train_steps=500", "--set=train.checkpoint_every=10"]
  process = subprocess.Popen(sweep_cmd(workdir, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)

  def checkpoint_step(name: str) -> int:
    steps = [int(p.name) for p in (workdir / name / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=0)

  # Cut a run that is checkpointed but far from its end: the run that shares the first slot with
  # the first done run is near step 500 and may finish between this poll and the kill.
  cut = []
  deadline = time.time() + 240
  while not cut and time.time() < deadline and process.poll() is None:
    states = last_states(workdir)
    done = [name for name, r in states.items() if r["state"] == "done"]
    running = [name for name, r in states.items() if r["state"] == "running"]
    if done:
      cut = [name for name in running if 0 < checkpoint_step(name) <= 300]
    time.sleep(0.05)
  assert cut, f"never saw a done run next to a checkpointed one: {last_states(workdir)}"
  process.send_signal(signal.SIGKILL)
  process.wait()
  cut = [name for name in cut if not (workdir / name / "results.json").exists()]
  assert cut, "every running run finished before the kill"
  finished = {name: (workdir / name / "results.json").stat().st_mtime for name in done}
  time.sleep(1.0)  # the runs' processes die with the sweep (PR_SET_PDEATHSIG)
  sizes = {name: (workdir / name / "train.log").stat().st_size for name in cut}
  time.sleep(1.0)
  for name in cut:
    assert (workdir / name / "train.log").stat().st_size == sizes[name], f"{name} kept writing"

  dry = subprocess.run(sweep_cmd(workdir, *args, "--dry_run"), cwd=ROOT, capture_output=True,
                       text=True, check=True)
  line = lambda name: dry.stdout.split(name)[1].splitlines()[0]
  for name in done:
    assert "done" in line(name)
  assert any("to resume from step" in line(name) for name in cut)

  again = subprocess.run(sweep_cmd(workdir, *args), cwd=ROOT, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-2000:]
  for name, mtime in finished.items():  # not redone
    assert (workdir / name / "results.json").stat().st_mtime == mtime
  resumed = [name for name in cut if "resuming from step" in (workdir / name / "train.log")
             .read_text()]
  assert resumed, "no cut run resumed from its checkpoint"
  states = last_states(workdir)
  assert sorted(states) == sorted(f"{a}_listops_seed{s}" for a in ("transformer", "local")
                                  for s in (0, 1))
  assert all(r["state"] == "done" for r in states.values())
  for name in cut:
    results = json.loads((workdir / name / "results.json").read_text())
    assert results["steps"] == 500
    assert states[name]["metrics"]["test_accuracy"] == results["splits"]["test"]["accuracy"]


def test_crashed_and_killed_runs_are_failed_with_their_log_tail_and_the_others_finish(
    tmp_path, monkeypatch):
  real = sweep.train_command

  def command(run, preset, sets, run_dir):
    if run.attention == "local" and run.seed == 0:
      return [sys.executable, "-c", "print('step 3 went wrong'); raise SystemExit(3)"]
    if run.attention == "local" and run.seed == 1:  # as the kernel's OOM killer does
      return [sys.executable, "-c", "import os, signal; print('allocating');"
              "os.kill(os.getpid(), signal.SIGKILL)"]
    return real(run, preset, sets, run_dir)

  monkeypatch.setattr(sweep, "train_command", command)
  workdir = tmp_path / "sweep"
  code = run_in_process(workdir, "--attention=local,transformer", "--seeds=0,1", "--jobs=2")
  assert code == 2  # the exit status counts the failed runs
  states = last_states(workdir)
  assert states["local_listops_seed0"]["state"] == "failed"
  assert states["local_listops_seed0"]["reason"] == "exit status 3"
  assert "step 3 went wrong" in states["local_listops_seed0"]["log_tail"]
  assert states["local_listops_seed1"]["state"] == "failed"
  assert states["local_listops_seed1"]["reason"].startswith("killed by SIGKILL")
  for seed in (0, 1):
    record = states[f"transformer_listops_seed{seed}"]
    assert record["state"] == "done" and record["wall_s"] > 0
    assert (workdir / f"transformer_listops_seed{seed}" / "results.json").exists()


def test_a_changed_config_is_refused_naming_the_run_and_nothing_is_launched(tmp_path):
  workdir = tmp_path / "sweep"
  run = sweep.Run("transformer", "listops", 0)
  old = sweep.resolve_config(run, "tiny", [*SETS, "train.num_train_steps=7"])
  (workdir / run.name).mkdir(parents=True)
  run_log.check_or_write_config(workdir / run.name, old)
  done_run = sweep.Run("transformer", "listops", 1)
  config = sweep.resolve_config(done_run, "tiny", SETS)
  (workdir / done_run.name).mkdir()
  run_log.check_or_write_config(workdir / done_run.name, config)
  run_log.write_json(workdir / done_run.name / "results.json",
                     {"steps": config.train.num_train_steps})
  out = subprocess.run(sweep_cmd(workdir, "--attention=transformer", "--seeds=0,1"), cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 2
  assert "transformer_listops_seed0" in out.stderr and "train.num_train_steps" in out.stderr
  assert not (workdir / "sweep.jsonl").exists()
  assert "transformer_listops_seed1" in out.stdout.split("seed0")[1]  # the done one is listed
  assert "done" in out.stdout.split("transformer_listops_seed1")[1].splitlines()[0]


def test_bad_flags_are_one_line_errors():
  for args, expected in [(["--attention=nope"], "unknown variant 'nope'"),
                         (["--tasks=listops,imagenet"], "unknown task 'imagenet'"),
                         (["--set=train.num_train_step=3"], "did you mean 'num_train_steps'"),
                         (["--seeds=a"], "expected integers")]:
    out = subprocess.run([sys.executable, "-m", "lra.sweep", "--dry_run", *args], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_each_job_gets_its_own_device_or_its_own_cores(monkeypatch):
  slots = sweep.job_slots(2, ["0", "1", "2"], "CUDA_VISIBLE_DEVICES")
  assert [s["env"] for s in slots] == [{"CUDA_VISIBLE_DEVICES": "0"},
                                       {"CUDA_VISIBLE_DEVICES": "1"}]
  with pytest.raises(ValueError, match="--jobs=4 but only 3 devices"):
    sweep.job_slots(4, ["0", "1", "2"], "CUDA_VISIBLE_DEVICES")
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
  cpu = sweep.job_slots(2, [], "CUDA_VISIBLE_DEVICES")
  assert [s["cores"] for s in cpu] == [[0, 1], [2, 3]]
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
  assert sweep.accelerator_ids("auto", "CUDA_VISIBLE_DEVICES") == ["4", "5"]
  assert sweep.accelerator_ids("none", "CUDA_VISIBLE_DEVICES") == []


def test_local_jobs_see_their_device_variable(tmp_path, monkeypatch):
  seen = tmp_path / "seen"
  seen.mkdir()

  def command(run, preset, sets, run_dir):
    return [sys.executable, "-c", "import os, pathlib; pathlib.Path("
            f"{str(seen)!r}, {run.name!r}).write_text(os.environ['CUDA_VISIBLE_DEVICES'])"]

  monkeypatch.setattr(sweep, "train_command", command)
  code = run_in_process(tmp_path / "sweep", "--attention=transformer,local", "--seeds=0,1",
                        "--jobs=2", "--devices=6,7")
  assert code == 4  # the fake command writes no results: every run is recorded as failed
  devices = {p.name: p.read_text() for p in seen.iterdir()}
  assert len(devices) == 4 and set(devices.values()) == {"6", "7"}


def test_slurm_launcher_through_submitits_local_executor(tmp_path):
  workdir = tmp_path / "sweep"
  out = subprocess.run(sweep_cmd(workdir, "--attention=transformer", "--seeds=3",
                                 "--launcher=slurm", "--submitit_cluster=local",
                                 "--slurm_time_min=10"),
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  record = last_states(workdir)["transformer_listops_seed3"]
  assert record["state"] == "done" and record["job_id"]
  results = json.loads((workdir / "transformer_listops_seed3" / "results.json").read_text())
  assert results["config"]["seed"] == 3
  assert "$ " in (workdir / "transformer_listops_seed3" / "train.log").read_text()


def test_a_preempted_run_is_described_as_resumable():
  assert sweep.describe_exit(143) == ("stopped by SIGTERM after saving a checkpoint (exit status "
                                      "143); starting the sweep again resumes it")
  assert sweep.describe_exit(130).startswith("stopped by SIGINT after saving a checkpoint")
  assert sweep.describe_exit(1) == "exit status 1"
