"""Tests of colorjax.checkpoint: exported models, workdir checkpoints, atomicity, clear errors."""
import json
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import checkpoint, sharding, workdir


def _replicate(tree, mesh):
  """Puts a host pytree on every device of the mesh."""
  return jax.device_put(tree, sharding.replicated(mesh))


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


def test_generator_variables_are_the_ema_when_the_run_keeps_one():
  state = _state()
  plain = checkpoint.generator_variables(state)
  assert plain["params"] is state["gen"]["params"]
  assert plain["batch_stats"] is state["gen"]["batch_stats"] and "opt_state" not in plain
  state["gen"]["ema_params"] = {"w": jnp.zeros((2, 3))}
  assert checkpoint.generator_variables(state)["params"] is state["gen"]["ema_params"]
  state["gen"]["batch_stats"] = {}  # a model without BatchNorm
  assert set(checkpoint.generator_variables(state)) == {"params"}


def test_a_workdir_model_loads_with_its_ema_params(tmp_path):
  mesh = sharding.create_mesh()
  checkpoint.write_config(tmp_path, {"model": {"name": "eccv16"}})
  state = _state()
  state["gen"]["ema_params"] = {"w": jnp.full((2, 3), 7.0)}
  manager = checkpoint.create_manager(tmp_path, keep_last=1)
  checkpoint.save(manager, 3, jax.device_put(state, sharding.replicated(mesh)), None)
  manager.wait_until_finished()
  manager.close()
  _, variables = checkpoint.load_model(tmp_path)
  np.testing.assert_array_equal(variables["params"]["w"], np.full((2, 3), 7.0))


def test_workdir_checkpoints_keep_last_and_best_and_restore(tmp_path):
  mesh = sharding.create_mesh()
  checkpoint.write_config(tmp_path, {"model": {"name": "eccv16"}})
  manager = checkpoint.create_manager(tmp_path, keep_last=2, best_metric="eval/score")
  for step, score in ((1, 0.9), (2, 0.1), (3, 0.2), (4, 0.3)):
    checkpoint.save(manager, step, _replicate(_state(step), mesh),
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
  checkpoint.save(manager, 1, _replicate(_state(), mesh))
  manager.close()
  # What a save killed mid-write leaves behind: a temporary directory, never a step directory.
  (tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234").mkdir()
  manager = checkpoint.create_manager(tmp_path)
  assert manager.latest_step() == 1
  manager.close()


def test_wrong_shapes_and_missing_paths_give_clear_errors(tmp_path):
  mesh = sharding.create_mesh()
  manager = checkpoint.create_manager(tmp_path)
  checkpoint.save(manager, 1, _replicate(_state(), mesh))
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


def _save_steps(tmp_path, steps, **manager_kwargs):
  mesh = sharding.create_mesh()
  manager = checkpoint.create_manager(tmp_path, **manager_kwargs)
  for step in steps:
    checkpoint.save(manager, step, _replicate(_state(step), mesh))
  manager.wait_until_finished()
  manager.close()
  return mesh


def _largest_state_file(step_dir):
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)


def test_best_checkpoint_survives_a_resume(tmp_path):
  # keep_last=1, lower is better: step 4 is the best; a second manager (a resumed run) must see
  # the metrics the first one saved, else its BestN deletes step 4.
  mesh = sharding.create_mesh()
  scores = {2: None, 4: 0.1, 6: None, 8: 0.5}
  manager = checkpoint.create_manager(tmp_path, keep_last=1, best_metric="eval/l", best_mode="min")
  for step, score in scores.items():
    checkpoint.save(manager, step, _replicate(_state(step), mesh),
                    metrics=None if score is None else {"eval/l": score})
  manager.wait_until_finished()
  assert manager.all_steps() == [4, 8]
  manager.close()
  resumed = checkpoint.create_manager(tmp_path, keep_last=1, best_metric="eval/l",
                                      best_mode="min")
  for step, score in ((10, None), (12, 0.9)):
    checkpoint.save(resumed, step, _replicate(_state(step), mesh),
                    metrics=None if score is None else {"eval/l": score})
  resumed.wait_until_finished()
  assert resumed.all_steps() == [4, 12]
  resumed.close()


@pytest.mark.parametrize("async_save", [True, False])
def test_every_file_of_a_step_has_a_checksum(tmp_path, async_save):
  _save_steps(tmp_path, [1], async_save=async_save)
  step_dir = tmp_path / "checkpoints" / "1"
  sums = json.loads((step_dir / workdir.CHECKSUMS_FILE).read_text())
  state_files = {p.relative_to(step_dir).as_posix() for p in (step_dir / "state").rglob("*")
                 if p.is_file()}
  assert state_files and state_files <= set(sums)
  for name, (size, crc) in sums.items():
    content = (step_dir / name).read_bytes()
    assert (size, crc) == (len(content), zlib.crc32(content))
  assert checkpoint.verify_checksums(step_dir) is None


@pytest.mark.parametrize("damage", ["flip_bit", "truncate", "delete_manifest", "delete_metadata"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage, caplog):
  mesh = _save_steps(tmp_path, [1, 2, 3])
  step_dir = tmp_path / "checkpoints" / "3"
  if damage == "flip_bit":
    target = _largest_state_file(step_dir)
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0x04
    target.write_bytes(bytes(content))
  elif damage == "truncate":
    target = _largest_state_file(step_dir)
    target.write_bytes(target.read_bytes()[:-7])
  elif damage == "delete_manifest":
    (step_dir / "state" / "manifest.ocdbt").unlink()
  else:
    (step_dir / "state" / "_METADATA").unlink()
  files_before = sorted(p.relative_to(step_dir) for p in step_dir.rglob("*"))

  # eval / colorize: one line naming the damaged step and the intact ones.
  checkpoint.write_config(tmp_path, {"model": {}})
  with pytest.raises(checkpoint.DamagedCheckpointError, match=r"step 3 .* is damaged.*\[1, 2\]"):
    checkpoint.load_model(tmp_path)

  manager = checkpoint.create_manager(tmp_path)
  with caplog.at_level("WARNING", logger="colorjax"):
    state, step = checkpoint.restore(manager, _abstract(_state(), mesh))
  assert step == 2
  np.testing.assert_array_equal(state["gen"]["params"]["w"], np.arange(6.0).reshape(2, 3) * 2)
  assert any("step 3" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
  # Kept, renamed out of Orbax's way (the resumed run saves step 3 anew), never deleted.
  aside = tmp_path / "checkpoints" / "3.damaged"
  assert sorted(p.relative_to(aside) for p in aside.rglob("*")) == files_before
  assert manager.all_steps() == [1, 2]
  checkpoint.save(manager, 3, _replicate(_state(3), mesh))
  manager.wait_until_finished()
  assert manager.all_steps() == [1, 2, 3]
  manager.close()


def test_no_intact_checkpoint_is_an_error_that_renames_nothing(tmp_path):
  mesh = _save_steps(tmp_path, [1])
  (tmp_path / "checkpoints" / "1" / "state" / "manifest.ocdbt").unlink()
  manager = checkpoint.create_manager(tmp_path)
  with pytest.raises(checkpoint.DamagedCheckpointError, match="no intact checkpoint.*step 1"):
    checkpoint.restore(manager, _abstract(_state(), mesh))
  assert manager.all_steps() == [1]
  manager.close()
