"""Tests of colorjax.checkpoint: exported models, workdir checkpoints, atomicity, clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import checkpoint, sharding


def _state(scale=1.0):
  return {"step": jnp.asarray(3, jnp.int32), "rng": jax.random.PRNGKey(0),
          "gen": {"params": {"w": jnp.arange(6.0).reshape(2, 3) * scale},
                  "batch_stats": {"mean": jnp.ones(3)}, "opt_state": {"mu": jnp.zeros((2, 3))}}}


def _abstract(state, mesh):
  s = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state)


def test_exported_model_round_trip(tmp_path):
  variables = {"params": {"conv": {"kernel": np.ones((3, 3, 1, 4), np.float32)}},
               "batch_stats": {"bn": {"mean": np.zeros(4, np.float32)}}}
  checkpoint.save_model(tmp_path / "m", {"model": {"name": "eccv16"}}, variables)
  config, loaded = checkpoint.load_model(tmp_path / "m")
  assert config == {"model": {"name": "eccv16"}}
  np.testing.assert_array_equal(loaded["params"]["conv"]["kernel"], variables["params"]["conv"]["kernel"])


def test_workdir_checkpoints_keep_last_and_best_and_restore(tmp_path):
  mesh = sharding.create_mesh()
  checkpoint.write_config(tmp_path, {"model": {"name": "eccv16"}})
  manager = checkpoint.create_manager(tmp_path, keep_last=2, best_metric="eval/score")
  for step, score in ((1, 0.9), (2, 0.1), (3, 0.2), (4, 0.3)):
    checkpoint.save(manager, step, sharding.replicate(_state(step), mesh),
                    metrics={"eval/score": score})
  manager.wait_until_finished()
  assert manager.all_steps() == [1, 3, 4]  # the last two and the best (step 1)
  state, step = checkpoint.restore(manager, _abstract(_state(), sharding.create_mesh(1)))
  assert step == 4
  np.testing.assert_array_equal(state["gen"]["params"]["w"], np.arange(6.0).reshape(2, 3) * 4)
  state1, _ = checkpoint.restore(manager, _abstract(_state(), mesh), step=1)
  np.testing.assert_array_equal(state1["gen"]["params"]["w"], np.arange(6.0).reshape(2, 3))
  with pytest.raises(checkpoint.CheckpointError, match="step 2"):
    checkpoint.restore(manager, _abstract(_state(), mesh), step=2)
  manager.close()
  config, variables = checkpoint.load_model(tmp_path)
  assert config["model"]["name"] == "eccv16" and set(variables) == {"params", "batch_stats"}


def test_incomplete_save_is_ignored(tmp_path):
  mesh = sharding.create_mesh()
  manager = checkpoint.create_manager(tmp_path)
  checkpoint.save(manager, 1, sharding.replicate(_state(), mesh))
  manager.close()
  # What a save killed mid-write leaves behind: a temporary directory, never a step directory.
  (tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234").mkdir()
  manager = checkpoint.create_manager(tmp_path)
  assert manager.latest_step() == 1
  manager.close()


def test_wrong_shapes_and_missing_paths_give_clear_errors(tmp_path):
  mesh = sharding.create_mesh()
  manager = checkpoint.create_manager(tmp_path)
  checkpoint.save(manager, 1, sharding.replicate(_state(), mesh))
  manager.wait_until_finished()
  other = _state()
  other["gen"]["params"]["w"] = jnp.zeros((4, 4))
  with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
    checkpoint.restore(manager, _abstract(other, mesh))
  manager.close()
  with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
    checkpoint.load_model(tmp_path / "nope")
  with pytest.raises(checkpoint.CheckpointError, match="neither"):
    (tmp_path / "empty").mkdir()
    checkpoint.load_model(tmp_path / "empty")
