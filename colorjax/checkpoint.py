"""Checkpoints: the only module of colorjax that talks to Orbax.

Two kinds of directory are handled:

* a training workdir, `WORKDIR/checkpoints/<step>/` holding the train state (params, batch
  statistics, optimizer state, step, rng), the data-iterator state of every process and the eval
  metrics of that step, next to `WORKDIR/config.json`. Saves are asynchronous and atomic (Orbax
  writes to a temporary directory and renames it when complete), so a run killed at any moment
  restarts from its last complete checkpoint. The last N checkpoints and the best one by an eval
  metric are kept. Every file of a step is checksummed at save time, so a checkpoint damaged on
  disk later is detected at restore (see `verify_checksums`) and training falls back to the
  newest intact one.
* an exported model, `DIR/model.json` + `DIR/variables/` (what `colorjax import` writes): the
  inference variables of one model and the config needed to rebuild it.

`load_model` reads either kind, so every command accepts both.
"""
from __future__ import annotations

import importlib
import json
import logging
import zlib
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath

from colorjax import paths
from colorjax import workdir as workdir_lib

_log = logging.getLogger(__name__)


class _ImportedOnUse:
  """A module imported when one of its attributes is first used: Orbax and grain take about a
  second to import, which `colorjax colorize --weights` and the other commands that never touch a
  checkpoint need not pay."""

  def __init__(self, name: str, *attributes: str):
    self._name = name
    self._attributes = attributes

  def __getattr__(self, attr: str):
    module = importlib.import_module(self._name)
    for name in self._attributes:
      module = getattr(module, name)
    return getattr(module, attr)


grain = _ImportedOnUse("grain")
ocp = _ImportedOnUse("orbax.checkpoint")
preservation_policy = _ImportedOnUse("orbax.checkpoint", "checkpoint_managers",
                                     "preservation_policy")

DAMAGED_SUFFIX = ".damaged"


class CheckpointError(RuntimeError):
  """A checkpoint is missing, incomplete or does not fit the model it is loaded into."""


def _directory(path: str | epath.Path) -> epath.Path:
  # Orbax refuses relative paths; the public functions here are also the Python API's entry.
  return epath.Path(paths.absolute(path))


class DamagedCheckpointError(CheckpointError):
  """A checkpoint's files differ from what was written (missing, truncated, altered) or Orbax
  cannot read them; `step` is the damaged step."""

  def __init__(self, step: int, message: str):
    super().__init__(message)
    self.step = step


# ----------------------------------------------------------------------------------------------
# Checksums
# ----------------------------------------------------------------------------------------------
# Orbax keeps no checksums of the array files (OCDBT data, manifests, metadata). CRC-32 of every
# file of a step, written into the step directory before Orbax renames it into place, lets a
# restore tell a flipped bit or a truncated file from a good checkpoint instead of loading it.

_CHECKSUM_CHUNK_BYTES = 1 << 22
# Files Orbax writes or rewrites at commit, after the checksums are recorded.
_UNCHECKED_FILES = frozenset({workdir_lib.CHECKSUMS_FILE, "_CHECKPOINT_METADATA",
                              "commit_success.txt"})


def _file_checksum(path: epath.Path) -> tuple[int, int]:
  """(size, CRC-32) of a file, read in chunks."""
  crc, size = 0, 0
  with path.open("rb") as f:
    while chunk := f.read(_CHECKSUM_CHUNK_BYTES):
      crc = zlib.crc32(chunk, crc)
      size += len(chunk)
  return size, crc


def _checked_files(step_dir: epath.Path) -> list[epath.Path]:
  files, folders = [], [step_dir]
  while folders:  # epath has no recursive glob on every backend
    for p in folders.pop().iterdir():
      if p.is_dir():
        folders.append(p)
      elif not (p.parent == step_dir and p.name in _UNCHECKED_FILES):
        files.append(p)
  return sorted(files)


def record_checksums(step_dir: str | epath.Path) -> None:
  """Writes `workdir.CHECKSUMS_FILE` into a step directory: {relative path: [size, crc32]} of its
  files."""
  step_dir = epath.Path(step_dir)
  sums = {p.relative_to(step_dir).as_posix(): list(_file_checksum(p))
          for p in _checked_files(step_dir)}
  tmp = step_dir / (workdir_lib.CHECKSUMS_FILE + ".tmp")
  tmp.write_text(json.dumps(sums, indent=0, sort_keys=True))
  tmp.replace(step_dir / workdir_lib.CHECKSUMS_FILE)


def verify_checksums(step_dir: str | epath.Path) -> str | None:
  """What is wrong with a step directory's files (one line), or None when they are intact.

  A step saved before checksums were recorded passes unchecked.
  """
  step_dir = epath.Path(step_dir)
  sums_path = step_dir / workdir_lib.CHECKSUMS_FILE
  if not sums_path.exists():
    return None
  try:
    sums = json.loads(sums_path.read_text())
  except (OSError, ValueError) as e:
    return f"{workdir_lib.CHECKSUMS_FILE} is unreadable ({e})"
  for name, (size, crc) in sorted(sums.items()):
    path = step_dir / name
    if not path.is_file():
      return f"{name} is missing"
    try:
      actual_size, actual_crc = _file_checksum(path)
    except OSError as e:
      return f"{name} is unreadable ({e.strerror or e})"
    if actual_size != size:
      return f"{name} has {actual_size} bytes, {size} were written"
    if actual_crc != crc:
      return f"{name} has a wrong checksum (changed on disk since it was written)"
  return None


def _record_in_flight_checksums(directory: epath.Path) -> None:
  """Checksums of the step being committed: Orbax's post-finalization callback runs on the
  primary process, after every process has written, before the temporary directory is renamed
  (so a step is never visible without them). Saves are sequential: the one temporary directory
  without checksums is the one in flight."""
  for tmp_dir in directory.glob("*.orbax-checkpoint-tmp*"):
    if tmp_dir.is_dir() and not (tmp_dir / workdir_lib.CHECKSUMS_FILE).exists():
      record_checksums(tmp_dir)


# ----------------------------------------------------------------------------------------------
# Training checkpoints
# ----------------------------------------------------------------------------------------------


def create_manager(workdir: str | epath.Path, *, keep_last: int = 3, best_metric: str | None = None,
                   best_mode: str = "max", async_save: bool = True) -> ocp.CheckpointManager:
  """A manager of `workdir/checkpoints` that keeps the last `keep_last` and the best checkpoint."""
  if best_mode not in ("max", "min"):
    raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
  policies = [preservation_policy.LatestN(keep_last)]
  best_fn = None
  if best_metric:
    sign = 1.0 if best_mode == "max" else -1.0
    best_fn = lambda metrics: sign * float(metrics[best_metric])
    policies.append(preservation_policy.BestN(get_metric_fn=best_fn, n=1,
                                              keep_checkpoints_without_metrics=False))
  directory = _directory(workdir) / workdir_lib.CHECKPOINTS_SUBDIR
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
      async_options=ocp.AsyncOptions(
          post_finalization_callback=lambda: _record_in_flight_checksums(directory))
      if async_save else None,
      # Orbax writes a step's metrics to disk (and reads them back when a later run opens the
      # workdir) only when `best_fn` is set; without them a resumed run's BestN saw no metrics
      # for the earlier steps and deleted the best checkpoint.
      best_fn=best_fn,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator=None,
         metrics: Mapping[str, float] | None = None, *, force: bool = True) -> None:
  """Starts an (asynchronous) save of `state` and the data iterator's position at `step`."""
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  saved = manager.save(step, args=ocp.args.Composite(**items),
                       metrics=None if metrics is None else {k: float(v) for k, v in metrics.items()},
                       force=force)
  step_dir = epath.Path(manager.directory) / str(step)
  # An async save records its checksums before the rename (the step directory does not exist
  # yet here, or has them); a synchronous one is committed already.
  if (saved and jax.process_index() == 0 and step_dir.exists()
      and not (step_dir / workdir_lib.CHECKSUMS_FILE).exists()):
    record_checksums(step_dir)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator=None,
            step: int | None = None) -> tuple[Any, int] | None:
  """Restores the latest (or the given) checkpoint; None when there is none.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with the target shardings: restoring
  onto a different device count than the one that saved works because the arrays are re-laid
  out to those shardings. The data iterator, if given, is moved to its saved position in place.

  Without `step`, a damaged latest checkpoint (see `verify_checksums`; or one Orbax fails to
  read) is reported in one line, renamed to `<step>.damaged` (kept for inspection, out of
  Orbax's way) and the next newest intact one is restored. When no checkpoint is intact nothing
  is renamed and `DamagedCheckpointError` names the newest one.
  """
  if step is not None:
    if step not in manager.all_steps():
      raise CheckpointError(
          f"no checkpoint for step {step} in {manager.directory}; available: {manager.all_steps()}")
    return _restore_step(manager, abstract_state, data_iterator, step), step
  steps = sorted(manager.all_steps(), reverse=True)
  damaged = []
  for candidate in steps:
    try:
      restored = _restore_step(manager, abstract_state, data_iterator, candidate)
    except DamagedCheckpointError as e:
      _log.warning("%s", e)
      damaged.append(e)
      continue
    if damaged:
      _set_aside(manager, [e.step for e in damaged])
    return restored, candidate
  if damaged:
    raise DamagedCheckpointError(
        damaged[0].step, f"no intact checkpoint in {manager.directory}: {damaged[0]}"
        + (f" (and {len(damaged) - 1} older ones are damaged too)" if len(damaged) > 1 else ""))
  return None


def _all_processes_agree(ok: bool) -> bool:
  """True when `ok` on every process (each reads its own data-iterator file of a step)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _first_line(e: BaseException, limit: int = 300) -> str:
  text = (str(e).strip().splitlines() or [type(e).__name__])[0]
  return text if len(text) <= limit else text[:limit] + "..."


def _restore_step(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator,
                  step: int) -> Any:
  step_dir = epath.Path(manager.directory) / str(step)
  problem = verify_checksums(step_dir)
  restored = None
  if problem is None:
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint {step_dir} does not fit this model/config: {_first_line(e)}") from e
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and TensorStore raise plain Exceptions for files they cannot parse.
      problem = f"Orbax cannot read it ({type(e).__name__}: {_first_line(e)})"
  if not _all_processes_agree(problem is None):
    raise DamagedCheckpointError(
        step, f"checkpoint step {step} ({step_dir}) is damaged: "
        f"{problem or 'another process could not read it'}")
  return restored["state"]


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames damaged step directories to `<step>.damaged[-N]`, where Orbax no longer sees them
  (a resumed run saves those steps anew), and makes the manager forget them."""
  directory = epath.Path(manager.directory)
  if jax.process_index() == 0:
    for step in steps:
      target = directory / f"{step}{DAMAGED_SUFFIX}"
      n = 1
      while target.exists():
        n += 1
        target = directory / f"{step}{DAMAGED_SUFFIX}-{n}"
      (directory / str(step)).rename(target)
      _log.warning(
          "set the damaged checkpoint step %d aside as %s", step, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("colorjax: damaged checkpoints set aside")
  manager.reload()


def check_workdir(workdir: str | epath.Path) -> None:
  """Raises CheckpointError when `workdir` exists but is not a folder."""
  path = epath.Path(workdir)
  if path.exists() and not path.is_dir():
    raise CheckpointError(f"workdir {workdir} exists and is not a folder")


def write_config(workdir: str | epath.Path, config_dict: Mapping[str, Any]) -> None:
  """Writes the run's config (once, by process 0) so eval/colorize can rebuild the model."""
  path = _directory(workdir) / workdir_lib.CONFIG_FILE
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    tmp.replace(path)


def read_config(workdir: str | epath.Path) -> dict[str, Any]:
  path = _directory(workdir) / workdir_lib.CONFIG_FILE
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
  target = directory / workdir_lib.VARIABLES_SUBDIR
  if target.exists():
    target.rmtree()
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(target, _to_host(dict(variables)))
    checkpointer.wait_until_finished()
  (directory / workdir_lib.MODEL_FILE).write_text(json.dumps(dict(model_config), indent=2,
                                                            sort_keys=True))


def _restore_on_host(path: epath.Path, metadata_tree: Any, partial: bool = False) -> Any:
  """Restores a saved pytree onto the first local device, whatever topology saved it; with
  `partial`, only the entries in `metadata_tree` (a part of what was saved) are read."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        metadata_tree)
  if partial:
    with ocp.PyTreeCheckpointer() as checkpointer:
      return _to_host(checkpointer.restore(path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True)))
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
  if (path / workdir_lib.MODEL_FILE).exists():
    config = json.loads((path / workdir_lib.MODEL_FILE).read_text())
    variables_dir = path / workdir_lib.VARIABLES_SUBDIR
    with ocp.StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(variables_dir)
    metadata = getattr(metadata, "item_metadata", metadata)
    return config, _restore_on_host(variables_dir, metadata)
  if not (path / workdir_lib.CHECKPOINTS_SUBDIR).exists():
    raise CheckpointError(
        f"{path} is neither an exported model ({workdir_lib.MODEL_FILE}) nor a training workdir "
        f"({workdir_lib.CHECKPOINTS_SUBDIR}/)")
  config = read_config(path)
  manager = ocp.CheckpointManager(
      path / workdir_lib.CHECKPOINTS_SUBDIR, item_names=("state", "data"),
      options=ocp.CheckpointManagerOptions(read_only=True))
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"no complete checkpoint in {path / workdir_lib.CHECKPOINTS_SUBDIR}")
  step = max(steps) if step is None else step
  if step not in steps:
    raise CheckpointError(f"no checkpoint for step {step} in {path}; available: {sorted(steps)}")
  step_dir = path / workdir_lib.CHECKPOINTS_SUBDIR / str(step)
  problem = verify_checksums(step_dir)
  if problem is None:
    try:
      with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(step_dir / "state")
      metadata = getattr(metadata, "item_metadata", metadata)
      # The generator's inference variables only: not its optimizer state, nor the discriminator.
      wanted = {k: v for k, v in metadata["gen"].items()
                if k in ("params", "ema_params", "batch_stats")}
      gen = _restore_on_host(step_dir / "state", {"gen": wanted}, partial=True)["gen"]
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and TensorStore raise plain Exceptions (or FileNotFoundError) for broken files.
      problem = f"Orbax cannot read it ({type(e).__name__}: {_first_line(e)})"
  if problem is not None:
    others = sorted(s for s in steps if s != step)
    hint = f"; choose another with --step (available: {others})" if others else ""
    raise DamagedCheckpointError(
        step, f"checkpoint step {step} ({step_dir}) is damaged: {problem}{hint}")
  logging.info("loaded %s step %d", path, step)
  return config, generator_variables({"gen": gen})


def generator_variables(state: Mapping[str, Any]) -> dict[str, Any]:
  """The generator's inference variables of a train state: its EMA params when the run keeps
  one, else its params, and its BatchNorm statistics when it has any."""
  gen = state["gen"]
  variables = {"params": gen["ema_params"] if gen.get("ema_params") else gen["params"]}
  if gen.get("batch_stats"):
    variables["batch_stats"] = gen["batch_stats"]
  return variables

