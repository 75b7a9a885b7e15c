"""Many (attention, task, seed) runs of `train.py`, locally or on a SLURM cluster.

    python -m lra.sweep --attention=transformer,performer --tasks=listops --seeds=0,1,2 \
        --preset=small --workdir=runs/sweep [--set=train.num_train_steps=500 ...] \
        [--jobs=2] [--launcher=local|slurm] [--dry-run]

Each run is `train.py --config=configs/<attention>_<task>.py[:preset] --config.seed=<seed>` in
its own process and its own directory `<workdir>/<attention>_<task>_seed<seed>`, so train.py's
resume machinery does the rest: a finished run (results.json at its last step) is skipped, an
unfinished one resumes from its checkpoint, and a run directory that was started with another
config is refused before anything is launched, naming the run. A run that fails (exception,
out of memory, killed) is recorded as failed with the tail of its log; the others go on, and the
exit status is the number of failed runs (at most 100).

`<workdir>/sweep.jsonl` records every state change of every run (pending, running, done,
failed), with its directory, wall time, final metrics or log tail; the last line about a run is
its state. A SIGKILL of the sweep takes its local runs with it (PR_SET_PDEATHSIG), so a restart
never finds a stray process writing into a run directory.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import datetime
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from absl import app, flags

from lra.tasks import TASKS  # task name -> module; the sweep's --tasks choices

ROOT = Path(__file__).resolve().parents[1]
MAX_EXIT = 100  # exit status = failed runs, capped below the shell's signal range

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined when run as a program (or by a test), so that
  importing this module (lra.report reads its index) defines none."""
  if "jobs" in FLAGS:
    return
  flags.DEFINE_list("attention", ["transformer"], "Registered attention names, or 'all'.")
  flags.DEFINE_list("tasks", ["listops"], f"Tasks ({', '.join(TASKS)}), or 'all'.")
  flags.DEFINE_list("seeds", ["0"], "Seeds (config.seed), e.g. 0,1,2.")
  flags.DEFINE_string("preset", "", "Config preset applied to every run (quick, small, tiny; "
                      "'' = the full LRA config).")
  flags.DEFINE_string("workdir", "runs/sweep", "Sweep directory: one run directory per run.")
  flags.DEFINE_multi_string("set", [], "A config override for every run, e.g. "
                            "--set=train.num_train_steps=500 (repeatable).")
  flags.DEFINE_integer("jobs", 1, "Runs at a time (local launcher).")
  flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Where runs execute.")
  flags.DEFINE_bool("dry_run", False, "List what would run and what is done; launch nothing.")
  flags.DEFINE_string("devices", "auto", "Local accelerators handed out one per job: 'auto' "
                      "(CUDA_VISIBLE_DEVICES or nvidia-smi), 'none', or a list like 0,1,2,3.")
  flags.DEFINE_string("device_env", "CUDA_VISIBLE_DEVICES", "Environment variable that gives a "
                      "job its device (e.g. ROCR_VISIBLE_DEVICES on AMD).")
  flags.DEFINE_string("slurm_partition", "", "SLURM partition.")
  flags.DEFINE_integer("slurm_time_min", 24 * 60, "SLURM time limit per run, minutes.")
  flags.DEFINE_integer("slurm_gpus", 1, "GPUs per run (SLURM).")
  flags.DEFINE_integer("slurm_cpus", 8, "CPUs per run (SLURM).")
  flags.DEFINE_integer("slurm_mem_gb", 64, "Memory per run, GB (SLURM).")
  flags.DEFINE_string("slurm_account", "", "SLURM account ('' = the cluster's default).")
  flags.DEFINE_multi_string("slurm_setup", [], "Shell lines run before each job (module load ...).")
  flags.DEFINE_enum("submitit_cluster", "slurm", ["slurm", "local", "debug"],
                    "submitit's executor; 'local' runs the same jobs here (used by the tests).")


# ---------------------------------------------------------------------------- runs and configs
@dataclasses.dataclass(frozen=True)
class Run:
  attention: str
  task: str
  seed: int

  @property
  def name(self) -> str:
    return f"{self.attention}_{self.task}_seed{self.seed}"

  @property
  def config_file(self) -> Path:
    return ROOT / "configs" / f"{self.attention}_{self.task}.py"


def plan(attention: list[str], tasks: list[str], seeds: list[str]) -> list[Run]:
  """The runs of the sweep, attention-major; unknown names are errors that list the known ones."""
  from models.attention import registry  # pylint: disable=import-outside-toplevel
  names = registry.names() if attention == ["all"] else attention
  for name in names:
    if name not in registry.names():
      raise ValueError(f"--attention: unknown variant {name!r}; registered: "
                       f"{', '.join(registry.names())}")
  tasks = list(TASKS) if tasks == ["all"] else tasks
  for task in tasks:
    if task not in TASKS:
      raise ValueError(f"--tasks: unknown task {task!r}; expected one of {', '.join(TASKS)}")
  try:
    seed_values = [int(s) for s in seeds]
  except ValueError as error:
    raise ValueError(f"--seeds={','.join(seeds)}: expected integers like 0,1,2") from error
  runs = [Run(a, t, s) for a in names for t in tasks for s in seed_values]
  for run in runs:
    if not run.config_file.exists():
      raise ValueError(f"{run.name}: no config {run.config_file.relative_to(ROOT)}")
  return runs


def config_args(run: Run, preset: str, sets: list[str]) -> list[str]:
  """train.py's config flags for `run`: the same strings resolve the config here and there."""
  spec = f"{run.config_file}:{preset}" if preset else str(run.config_file)
  args = [f"--config={spec}", f"--config.seed={run.seed}"]
  for item in sets:
    if "=" not in item:
      raise ValueError(f"--set={item!r}: expected field=value, e.g. train.num_train_steps=500")
    args.append(f"--config.{item}")
  return args


def resolve_config(run: Run, preset: str, sets: list[str]):
  """The run's config exactly as train.py will build it (same config_flags parsing)."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  values, argv = flags.FlagValues(), ["train.py", *config_args(run, preset, sets)]
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)  # config_flags finds the overrides in argv
  try:
    values(argv)
  except Exception as error:  # pylint: disable=broad-except  train.py's one-line diagnosis
    from lra import cli  # pylint: disable=import-outside-toplevel
    raise ValueError(f"{run.name}: {cli.explain(error, argv)}") from None
  return values.config


def train_command(run: Run, preset: str, sets: list[str], run_dir: Path) -> list[str]:
  return [sys.executable, str(ROOT / "train.py"), *config_args(run, preset, sets),
          f"--workdir={run_dir}"]


def status(run_dir: Path, config) -> tuple[str, dict]:
  """('done', results) | ('resume', {'step': n}) | ('new', {}) | ('refused', {'error': ...})."""
  from lra import run_log  # pylint: disable=import-outside-toplevel
  if (run_dir / "config.json").exists():
    try:  # train.py's own check, which only compares when config.json exists
      run_log.check_or_write_config(run_dir, config)
    except ValueError as error:
      return "refused", {"error": str(error)}
  results = run_dir / "results.json"
  if results.exists():
    found = json.loads(results.read_text())
    if found.get("steps") == config.train.num_train_steps:
      return "done", found
  steps = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
  return ("resume", {"step": max(steps)}) if steps else ("new", {})


def final_metrics(results: dict) -> dict:
  pick = lambda d, k: (d or {}).get(k)
  return {"steps": results.get("steps"), "parameters": results.get("parameters"),
          "test_accuracy": pick(results.get("splits", {}).get("test"), "accuracy"),
          "validation_accuracy": pick(results.get("splits", {}).get("validation"), "accuracy"),
          "test_at_best_validation": pick(results.get("test_at_best_validation"), "accuracy"),
          "steps_per_s": results.get("steps_per_s")}


def log_tail(path: Path, lines: int = 20) -> list[str]:
  """The last lines of a log; progress bars' carriage-return updates count as lines."""
  if not path.exists():
    return []
  text = path.read_bytes()[-64_000:].decode(errors="replace").replace("\r", "\n")
  return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


# ---------------------------------------------------------------------------- the index
class Index:
  """Append-only `sweep.jsonl`: one record per state change; the last one about a run wins."""

  def __init__(self, workdir: Path):
    self.path = workdir / "sweep.jsonl"
    self.lock = threading.Lock()

  def write(self, run: Run, state: str, run_dir: Path, **fields) -> None:
    record = {"run": run.name, "attention": run.attention, "task": run.task, "seed": run.seed,
              "state": state, "dir": str(run_dir),
              "time": datetime.datetime.now().isoformat(timespec="seconds"), **fields}
    with self.lock, open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def states(self) -> dict[str, dict]:
    if not self.path.exists():
      return {}
    latest = {}
    for number, line in enumerate(self.path.read_text().splitlines(), 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a line cut by a kill: the run's directory still decides
        print(f"{self.path}:{number}: unreadable record skipped", file=sys.stderr)
        continue
      latest[record["run"]] = record
    return latest


# ---------------------------------------------------------------------------- launchers
def _die_with_parent() -> None:
  """Child side of Popen: SIGKILL this process when the thread that started it dies."""
  libc = ctypes.CDLL("libc.so.6", use_errno=True)
  libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  if os.getppid() == 1:  # the parent died before prctl took effect
    os._exit(1)


def accelerator_ids(spec: str, env_name: str) -> list[str]:
  """Device ids to hand out one per job, without initialising JAX in this process."""
  if spec == "none":
    return []
  if spec != "auto":
    return [s for s in spec.split(",") if s]
  if os.environ.get(env_name):
    return [s for s in os.environ[env_name].split(",") if s]
  try:
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [str(i) for i, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU")]


def job_slots(jobs: int, devices: list[str], env_name: str) -> list[dict]:
  """One slot per concurrent job: its own accelerator, or on a CPU host its own cores."""
  if devices:
    if jobs > len(devices):
      raise ValueError(f"--jobs={jobs} but only {len(devices)} devices ({','.join(devices)}); "
                       "each job gets its own device")
    return [{"env": {env_name: device}, "cores": None} for device in devices[:jobs]]
  cores = sorted(os.sched_getaffinity(0))
  if jobs == 1 or jobs > len(cores):
    return [{"env": {}, "cores": None} for _ in range(jobs)]
  share = len(cores) // jobs  # disjoint core sets: XLA's CPU thread pool sizes itself to them
  return [{"env": {}, "cores": cores[i * share:(i + 1) * share]} for i in range(jobs)]


def run_local(command: list[str], run_dir: Path, slot: dict) -> tuple[int, float]:
  run_dir.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, **slot["env"])
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cores = slot["cores"]

  def setup():
    _die_with_parent()
    if cores:
      os.sched_setaffinity(0, cores)

  started = time.time()
  with open(run_dir / "train.log", "ab") as log:
    log.write(f"\n$ {shlex.join(command)}\n".encode())
    log.flush()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, preexec_fn=setup)
    returncode = process.wait()
  return returncode, time.time() - started


def describe_exit(returncode: int) -> str:
  if returncode < 0:
    name = signal.Signals(-returncode).name
    hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
    return f"killed by {name}{hint}"
  if returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT):  # train.py's clean stop
    name = signal.Signals(returncode - 128).name
    return (f"stopped by {name} after saving a checkpoint (exit status {returncode}); starting "
            "the sweep again resumes it")
  return f"exit status {returncode}"


# ---------------------------------------------------------------------------- the sweep
class Sweep:

  def __init__(self, runs: list[Run], workdir: Path, preset: str, sets: list[str]):
    self.runs, self.workdir, self.preset, self.sets = runs, workdir, preset, sets
    self.index = Index(workdir)
    self.configs = {run: resolve_config(run, preset, sets) for run in runs}
    self.dirs = {run: workdir / run.name for run in runs}

  def statuses(self) -> dict[Run, tuple[str, dict]]:
    return {run: status(self.dirs[run], self.configs[run]) for run in self.runs}

  def finish(self, run: Run, returncode: int, wall: float, **extra) -> bool:
    """Records a finished process; True when the run is done."""
    state, found = status(self.dirs[run], self.configs[run])
    if returncode == 0 and state == "done":
      self.index.write(run, "done", self.dirs[run], wall_s=wall,
                       metrics=final_metrics(found), **extra)
      return True
    reason = describe_exit(returncode) if returncode else f"ended with state {state}"
    self.index.write(run, "failed", self.dirs[run], wall_s=wall, reason=reason,
                     log_tail=log_tail(self.dirs[run] / "train.log"), **extra)
    return False

  def launch_local(self, todo: list[Run], slot_list: list[dict], bar) -> int:
    slots = queue.Queue()
    for slot in slot_list:
      slots.put(slot)

    def one(run: Run) -> bool:
      slot = slots.get()
      try:
        self.index.write(run, "running", self.dirs[run], slot=slot["env"] or slot["cores"])
        command = train_command(run, self.preset, self.sets, self.dirs[run])
        returncode, wall = run_local(command, self.dirs[run], slot)
        return self.finish(run, returncode, wall)
      finally:
        slots.put(slot)

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(slot_list)) as pool:
      futures = {pool.submit(one, run): run for run in todo}
      for future in concurrent.futures.as_completed(futures):
        ok = future.result()
        failed += not ok
        bar.update(1)
        bar.set_postfix(failed=failed)
        if not ok:
          tqdm_write(f"FAILED {futures[future].name}: see {self.dirs[futures[future]]}/train.log")
    return failed

  def launch_slurm(self, todo: list[Run], bar) -> int:
    import submitit  # pylint: disable=import-outside-toplevel
    executor = submitit.AutoExecutor(folder=self.workdir / "submitit" / "%j",
                                     cluster=FLAGS.submitit_cluster)
    executor.update_parameters(timeout_min=FLAGS.slurm_time_min, cpus_per_task=FLAGS.slurm_cpus,
                               gpus_per_node=FLAGS.slurm_gpus, mem_gb=FLAGS.slurm_mem_gb,
                               slurm_setup=FLAGS.slurm_setup,
                               **({"slurm_partition": FLAGS.slurm_partition}
                                  if FLAGS.slurm_partition else {}),
                               **({"slurm_account": FLAGS.slurm_account}
                                  if FLAGS.slurm_account else {}))
    jobs = {}
    for run in todo:
      self.dirs[run].mkdir(parents=True, exist_ok=True)
      command = train_command(run, self.preset, self.sets, self.dirs[run])
      log = self.dirs[run] / "train.log"  # the same log a local run writes
      shell = f"echo '$ {shlex.join(command)}' >> {shlex.quote(str(log))}; " \
              f"exec {shlex.join(command)} >> {shlex.quote(str(log))} 2>&1"
      executor.update_parameters(name=run.name)
      job = executor.submit(submitit.helpers.CommandFunction(["bash", "-c", shell],
                                                             cwd=str(ROOT)))
      jobs[run] = (job, time.time())
      self.index.write(run, "running", self.dirs[run], job_id=str(job.job_id))
    failed = 0
    pending = dict(jobs)
    while pending:
      for run, (job, started) in list(pending.items()):
        if not job.done():
          continue
        del pending[run]
        returncode = 0
        try:
          job.result()
        except Exception as error:  # pylint: disable=broad-except  submitit re-raises the job's failure
          returncode = 1
          with open(self.dirs[run] / "train.log", "a") as log:
            log.write(f"\nsubmitit: {error}\n")
        failed += not self.finish(run, returncode, time.time() - started, job_id=str(job.job_id))
        bar.update(1)
        bar.set_postfix(failed=failed)
      time.sleep(2)
    return failed


def tqdm_write(message: str) -> None:
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  tqdm.write(message)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; flags are written --name=value")
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  try:
    runs = plan(FLAGS.attention, FLAGS.tasks, FLAGS.seeds)
    workdir = Path(FLAGS.workdir)
    sweep = Sweep(runs, workdir, FLAGS.preset, FLAGS.set)
    if FLAGS.launcher == "local" and not FLAGS.dry_run:
      slots = job_slots(FLAGS.jobs, accelerator_ids(FLAGS.devices, FLAGS.device_env),
                        FLAGS.device_env)
  except ValueError as error:
    print(f"lra.sweep: {error}", file=sys.stderr)
    return 2
  statuses = sweep.statuses()
  refused = [(run, info["error"]) for run, (state, info) in statuses.items() if state == "refused"]
  done = [run for run, (state, _) in statuses.items() if state == "done"]
  todo = [run for run, (state, _) in statuses.items() if state in ("new", "resume")]
  for run, (state, info) in statuses.items():
    what = {"done": "done", "new": "to run", "refused": "REFUSED",
            "resume": f"to resume from step {info.get('step')}"}[state]
    print(f"{run.name:<45} {what}", flush=True)
  if refused:
    for run, error in refused:
      print(f"lra.sweep: {run.name}: {error}", file=sys.stderr)
    print(f"lra.sweep: {len(refused)} run(s) refused: their directories hold another config; "
          "nothing launched", file=sys.stderr)
    return 2
  print(f"{len(runs)} runs: {len(done)} done, {len(todo)} to run", flush=True)
  if FLAGS.dry_run:
    return 0
  workdir.mkdir(parents=True, exist_ok=True)
  recorded = sweep.index.states()
  for run in runs:
    state = "done" if run in done else "pending"
    if recorded.get(run.name, {}).get("state") != state:
      if state == "done":
        sweep.index.write(run, "done", sweep.dirs[run],
                          metrics=final_metrics(statuses[run][1]))
      else:
        sweep.index.write(run, "pending", sweep.dirs[run])
  bar = tqdm(total=len(runs), initial=len(done), desc="sweep", unit="run", dynamic_ncols=True)
  try:
    if FLAGS.launcher == "slurm":
      failed = sweep.launch_slurm(todo, bar)
    else:
      failed = sweep.launch_local(todo, slots, bar)
  finally:
    bar.close()
  print(f"{len(runs) - failed} of {len(runs)} runs done, {failed} failed; index "
        f"{sweep.index.path}", flush=True)
  return min(failed, MAX_EXIT)


def entry(argv):
  sys.exit(main(argv))


if __name__ == "__main__":
  define_flags()
  app.run(entry)
