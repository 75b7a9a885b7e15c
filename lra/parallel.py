"""Devices and hosts: JAX's distributed runtime, the data mesh, data-parallel and FSDP shardings.

One mesh axis, "data", over every device of every host. The batch is split over it; parameters
and optimizer state are replicated (data parallel) or, with `config.train.fsdp`, sharded over
the same axis (each array along its largest axis that the device count divides; XLA gathers
them for the step and reduce-scatters the gradients). Knows nothing of models or tasks.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
# Arrays smaller than this stay replicated under FSDP: sharding a bias or a LayerNorm scale
# saves nothing and costs a collective each step.
FSDP_MIN_SIZE = 1024


def initialize_distributed(coordinator: str = "", num_processes: int = 0,
                           process_id: int = -1, detect: bool = False) -> bool:
  """Starts `jax.distributed` when this is one of several processes; returns whether it did.

  Explicit flags (`--coordinator=host:port --num_processes=N --process_id=i`) win. An `srun`
  step of more than one task is detected from its environment (SLURM_STEP_NUM_TASKS; a sweep's
  runs inside an allocation, outside srun, stay single processes); `detect` (train.py's
  `--distributed`) lets JAX detect any cluster it knows (a multi-host Cloud TPU slice, SLURM,
  Open MPI) with `jax.distributed.initialize()` and no arguments. Otherwise this is a single
  process and nothing starts. Must run before anything touches a device."""
  explicit = [bool(coordinator), num_processes > 0, process_id >= 0]
  if any(explicit):
    if not all(explicit):
      raise ValueError("--coordinator, --num_processes and --process_id go together (got "
                       f"coordinator={coordinator!r}, num_processes={num_processes}, "
                       f"process_id={process_id})")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                       f"{num_processes})")
    _cpu_collectives()
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True
  if detect or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1:
    _cpu_collectives()
    jax.distributed.initialize()
    return True
  return False


def _cpu_collectives():
  """Processes of the CPU backend talk through Gloo (the default has no cross-process
  collectives); GPU (NCCL) and TPU backends ignore this setting."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def is_main_process() -> bool:
  """Process 0 writes logs, TensorBoard events and results.json; every process checkpoints."""
  return jax.process_index() == 0


def data_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def check_batch_split(batch_size: int, mesh: Mesh, what: str = "config.train.batch_size"):
  devices, processes = mesh.devices.size, jax.process_count()
  if batch_size % devices:
    raise ValueError(f"{what}={batch_size} must be divisible by the {devices} devices of the "
                     "data mesh")
  if batch_size % processes:
    raise ValueError(f"{what}={batch_size} must be divisible by the {processes} processes")


def fsdp_spec(shape: tuple[int, ...], num_devices: int) -> PartitionSpec:
  """Shards the largest axis the device count divides; small or indivisible arrays replicate."""
  if num_devices == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return PartitionSpec()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % num_devices == 0:
      return PartitionSpec(*([None] * axis), AXIS)
  return PartitionSpec()


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool):
  """A NamedSharding per leaf of a (possibly abstract) train state: replicated, or FSDP's."""
  def sharding(leaf):
    shape = getattr(leaf, "shape", ())
    spec = fsdp_spec(tuple(shape), mesh.devices.size) if fsdp else PartitionSpec()
    return NamedSharding(mesh, spec)
  return jax.tree_util.tree_map(sharding, abstract_state)


def put_global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """This process's rows -> global arrays split over the mesh (rows of process p are the p-th
  block of the global batch, as lra/pipeline.py hands them out)."""
  if jax.process_count() == 1:
    return jax.device_put(local_batch, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
