"""Checkpoints: the only module of colorjax that talks to Orbax.

Two kinds of directory are handled:

* a training workdir, `WORKDIR/checkpoints/<step>/` holding the train state (params, batch
  statistics, optimizer state, step, rng), the data-iterator state of every process and the eval
  metrics of that step, next to `WORKDIR/config.json`. Saves are asynchronous and atomic (Orbax
  writes to a temporary directory and renames it when complete), so a run killed at any moment
  restarts from its last complete checkpoint. The last N checkpoints and the best one by an eval
  metric are kept.
* an exported model, `DIR/model.json` + `DIR/variables/` (what `colorjax import` writes): the
  inference variables of one model and the config needed to rebuild it.

`load_model` reads either kind, so every command accepts both.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.checkpoint_managers import preservation_policy

from colorjax import paths

CHECKPOINTS_SUBDIR = "checkpoints"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
VARIABLES_SUBDIR = "variables"


class CheckpointError(RuntimeError):
  """A checkpoint is missing, incomplete or does not fit the model it is loaded into."""


def _directory(path: str | epath.Path) -> epath.Path:
  # Orbax refuses relative paths; the public functions here are also the Python API's entry.
  return epath.Path(paths.absolute(path))


# ----------------------------------------------------------------------------------------------
# Training checkpoints
# ----------------------------------------------------------------------------------------------


def create_manager(workdir: str | epath.Path, *, keep_last: int = 3, best_metric: str | None = None,
                   best_mode: str = "max", async_save: bool = True) -> ocp.CheckpointManager:
  """A manager of `workdir/checkpoints` that keeps the last `keep_last` and the best checkpoint."""
  if best_mode not in ("max", "min"):
    raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
  policies = [preservation_policy.LatestN(keep_last)]
  if best_metric:
    sign = 1.0 if best_mode == "max" else -1.0
    policies.append(preservation_policy.BestN(
        get_metric_fn=lambda metrics: sign * float(metrics[best_metric]), n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(
      _directory(workdir) / CHECKPOINTS_SUBDIR, options=options, item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator=None,
         metrics: Mapping[str, float] | None = None, *, force: bool = True) -> None:
  """Starts an (asynchronous) save of `state` and the data iterator's position at `step`."""
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items),
               metrics=None if metrics is None else {k: float(v) for k, v in metrics.items()},
               force=force)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator=None,
            step: int | None = None) -> tuple[Any, int] | None:
  """Restores the latest (or the given) checkpoint; None when there is none.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with the target shardings: restoring
  onto a different device count than the one that saved works because the arrays are re-laid
  out to those shardings. The data iterator, if given, is moved to its saved position in place.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  if step not in manager.all_steps():
    raise CheckpointError(
        f"no checkpoint for step {step} in {manager.directory}; available: {manager.all_steps()}")
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
        f"checkpoint {manager.directory}/{step} does not fit this model/config: {e}") from e
  return restored["state"], step


def write_config(workdir: str | epath.Path, config_dict: Mapping[str, Any]) -> None:
  """Writes the run's config (once, by process 0) so eval/colorize can rebuild the model."""
  path = _directory(workdir) / CONFIG_FILE
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    tmp.replace(path)


def read_config(workdir: str | epath.Path) -> dict[str, Any]:
  path = _directory(workdir) / CONFIG_FILE
  if not path.exists():
    raise CheckpointError(f"{workdir} is not a colorjax workdir: {path} is missing")
  return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------
# Inference models (exported or taken from a training workdir)
# ----------------------------------------------------------------------------------------------


def _to_host(tree):
  return jax.tree.map(np.asarray, tree)


def save_model(directory: str | epath.Path, model_config: Mapping[str, Any],
               variables: Mapping[str, Any]) -> None:
  """Writes an exported model: `model.json` (how to rebuild it) and its Flax variables."""
  directory = _directory(directory)
  directory.mkdir(parents=True, exist_ok=True)
  target = directory / VARIABLES_SUBDIR
  if target.exists():
    target.rmtree()
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(target, _to_host(dict(variables)))
    checkpointer.wait_until_finished()
  (directory / MODEL_FILE).write_text(json.dumps(dict(model_config), indent=2, sort_keys=True))


def _restore_on_host(path: epath.Path, metadata_tree: Any) -> Any:
  """Restores a saved pytree onto the first local device, whatever topology saved it."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        metadata_tree)
  with ocp.StandardCheckpointer() as checkpointer:
    return _to_host(checkpointer.restore(path, target))


def load_model(path: str | epath.Path, step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """Loads (config, variables) from an exported model dir or a training workdir.

  For a workdir the latest checkpoint is used unless `step` is given; `config` is the full run
  config as a dict (its `model` entry rebuilds the network) and `variables` holds the
  generator's `params` (its EMA when the run kept one) and `batch_stats`.
  """
  path = _directory(path)
  if not path.exists():
    raise CheckpointError(f"checkpoint path {path} does not exist")
  if (path / MODEL_FILE).exists():
    config = json.loads((path / MODEL_FILE).read_text())
    variables_dir = path / VARIABLES_SUBDIR
    with ocp.StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(variables_dir)
    metadata = getattr(metadata, "item_metadata", metadata)
    return config, _restore_on_host(variables_dir, metadata)
  if not (path / CHECKPOINTS_SUBDIR).exists():
    raise CheckpointError(
        f"{path} is neither an exported model ({MODEL_FILE}) nor a training workdir "
        f"({CHECKPOINTS_SUBDIR}/)")
  config = read_config(path)
  manager = ocp.CheckpointManager(
      path / CHECKPOINTS_SUBDIR, item_names=("state", "data"),
      options=ocp.CheckpointManagerOptions(read_only=True))
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"no complete checkpoint in {path / CHECKPOINTS_SUBDIR}")
  step = max(steps) if step is None else step
  if step not in steps:
    raise CheckpointError(f"no checkpoint for step {step} in {path}; available: {sorted(steps)}")
  state_dir = path / CHECKPOINTS_SUBDIR / str(step) / "state"
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(state_dir)
  metadata = getattr(metadata, "item_metadata", metadata)
  gen = _restore_on_host(state_dir, metadata)["gen"]
  state = {"params": gen["ema_params"] if gen.get("ema_params") else gen["params"]}
  if gen.get("batch_stats"):
    state["batch_stats"] = gen["batch_stats"]
  logging.info("loaded %s step %d", path, step)
  return config, state

