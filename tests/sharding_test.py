"""Tests of colorjax.sharding: the mesh, batch placement and clear errors."""
import jax
import numpy as np
import pytest

from colorjax import sharding


def test_mesh_and_batch_placement():
  mesh = sharding.create_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count() == 8
  batch = sharding.shard_batch({"rgb": np.arange(8 * 2 * 3).reshape(8, 2, 3)}, mesh)
  assert batch["rgb"].shape == (8, 2, 3)
  assert len(batch["rgb"].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(batch["rgb"]), np.arange(48).reshape(8, 2, 3))
  assert sharding.create_mesh(1).devices.size == 1


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="num_devices=9"):
    sharding.create_mesh(9)
  with pytest.raises(ValueError, match="train.batch_size=12"):
    sharding.check_batch_size(12, sharding.create_mesh())
  with pytest.raises(ValueError, match="'maybe'"):
    sharding.initialize_distributed("maybe")


def test_auto_distributed_is_a_no_op_on_a_single_host(monkeypatch):
  for key in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE",
              "TPU_WORKER_HOSTNAMES", "COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(key, raising=False)
  sharding.initialize_distributed("auto")
  assert jax.process_count() == 1
