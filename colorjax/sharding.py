"""The device mesh and the shardings of colorjax: data parallelism on one `data` axis.

The batch is split over the `data` axis; the train state is replicated. Under `jax.jit` XLA then
inserts the all-reduces of gradients and of BatchNorm statistics, so every statistic is over the
global batch and results do not depend on the device count.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables by which cluster schedulers announce a multi-process job.
_CLUSTER_ENV_VARS = (
    "JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
)


def initialize_distributed(mode: str = "auto") -> None:
  """Starts `jax.distributed` for multi-process runs.

  mode: 'auto' initialises when the environment describes a multi-process job (SLURM with more
  than one task, Open MPI, a Cloud TPU pod slice, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID set explicitly); 'on' always initialises (auto-detection of the cluster);
  'off' never does.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed must be 'auto', 'on' or 'off', got {mode!r}")
  if mode == "off" or jax.distributed.is_initialized():
    return
  if mode == "auto":
    if os.environ.get("SLURM_NTASKS", "1") == "1" and not any(
        k in os.environ for k in _CLUSTER_ENV_VARS if k != "SLURM_NTASKS"):
      return
  coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if coordinator:
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
  else:
    jax.distributed.initialize()


def create_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over all devices (or the first `num_devices`) with the axis `data`."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are available")
    devices = devices[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, all other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  devices = mesh.devices.size
  if global_batch_size % devices or global_batch_size % jax.process_count():
    raise ValueError(
        f"train.batch_size={global_batch_size} must be divisible by the number of devices "
        f"({devices}) and of processes ({jax.process_count()})")


def local_batch_size(global_batch_size: int) -> int:
  """The part of the global batch that this process feeds."""
  return global_batch_size // jax.process_count()


def shard_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Places this process's slice of a batch on the mesh as global arrays split on `data`."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
