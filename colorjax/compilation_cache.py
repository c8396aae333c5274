"""The persistent compilation cache: a second `colorjax colorize`, `eval`, `bench` or a resumed
`colorjax train` loads its compiled steps from disk instead of compiling them again.

On by default in the CLI (`colorjax --no-compile-cache ...` turns it off); notebooks call
`enable()`. The cache lives in `$COLORJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/colorjax`, else
`~/.cache/colorjax`, in a folder per CPU model (XLA:CPU entries are native code for the CPU that
compiled them) and is capped at `MAX_SIZE_BYTES`, least recently used entries evicted first. An
explicit `JAX_COMPILATION_CACHE_DIR` wins over all of this.

XLA's cache is looked up by the lowered program, so a process still traces and lowers its model
(seconds for ECCV16's Winograd convolutions) before the hit. `stored_program` keeps the lowered
program itself, exported (`jax.export`), in the cache's `exported/` folder, keyed by what the
trace depends on (the function's static arguments, the argument shapes, colorjax's source, the
jax/flax versions, the backend): a later process loads it instead of tracing, and its compilation
then hits XLA's cache.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import platform
import tempfile
from typing import Callable

import jax
from jax import export

_log = logging.getLogger(__name__)

MAX_SIZE_BYTES = 2 * 1024**3
# Compilations faster than this are not worth a file (jax's default is 1 s).
MIN_COMPILE_TIME_S = 0.5
EXPORTED_SUBDIR = "exported"
# Exported programs kept (newest first); one is tens of KB for ECCV16, a few per model and shape.
MAX_EXPORTED_FILES = 64

# Where `stored_program` keeps exported programs; None until `enable()`.
_exported_dir: pathlib.Path | None = None


def _cpu_identity() -> str:
  text = platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      text += "".join(line for line in f if line.startswith(("model name", "flags")))
  except OSError:
    pass
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_dir() -> pathlib.Path:
  root = os.environ.get("COLORJAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "colorjax")
  return pathlib.Path(root).expanduser().absolute() / f"jax-{_cpu_identity()}"


def enable(directory: str | os.PathLike | None = None) -> str:
  """Turns the cache on (before the first compilation); returns the directory in use."""
  global _exported_dir
  explicit = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if explicit and directory is None:
    _exported_dir = pathlib.Path(explicit) / EXPORTED_SUBDIR
    return explicit
  path = pathlib.Path(directory) if directory is not None else default_dir()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
  jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
  _exported_dir = path / EXPORTED_SUBDIR
  return str(path)


@functools.lru_cache(maxsize=None)
def _environment_fingerprint() -> str:
  # What a trace can depend on besides the function's arguments: colorjax's own code and the
  # libraries that trace it.
  digest = hashlib.sha256()
  for name in ("jax", "jaxlib", "flax", "numpy"):
    digest.update(f"{name}={importlib.metadata.version(name)};".encode())
  package = pathlib.Path(__file__).resolve().parent
  for source in sorted(package.rglob("*.py")):
    digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
  return digest.hexdigest()


def _signature(args: tuple) -> tuple:
  leaves, treedef = jax.tree.flatten(args)
  return str(treedef), tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


class _StoredProgram:
  """See `stored_program`."""

  def __init__(self, jitted: Callable, name: str, static: str):
    self._jitted = jitted
    self._name = name
    self._static = static
    self._calls: dict[tuple, Callable] = {}

  def __call__(self, *args):
    signature = _signature(args)
    call = self._calls.get(signature)
    if call is None:
      call = self._calls[signature] = self._program(args, signature)
    return call(*args)

  def _program(self, args: tuple, signature: tuple) -> Callable:
    directory = _exported_dir
    if directory is None:
      return self._jitted
    key = hashlib.sha256(repr((
        self._name, self._static, signature, _environment_fingerprint(), jax.default_backend(),
        jax.devices()[0].device_kind, jax.config.jax_enable_x64,
        jax.config.jax_default_matmul_precision)).encode()).hexdigest()[:32]
    path = directory / f"{self._name}-{key}.jaxexport"
    try:
      exported = export.deserialize(bytearray(path.read_bytes()))
    except FileNotFoundError:
      exported = None
    except Exception as e:  # pylint: disable=broad-except
      _log.warning("ignoring the unreadable exported program %s: %s", path, e)
      exported = None
    if exported is None:
      serialized = export.export(self._jitted)(*args).serialize()
      _write(path, serialized)
      # The program just exported runs as a later process will load it.
      exported = export.deserialize(serialized)
    return jax.jit(exported.call)


def stored_program(jitted: Callable, name: str, static: str) -> Callable:
  """`jitted` (a `jax.jit` function of arrays), whose lowered program for each argument signature
  is kept on disk while the cache is enabled, so that a later process loads it instead of tracing.

  `name` names the files; `static` must describe everything `jitted` closes over that changes its
  program (e.g. the model's config): it is part of the key, with the arguments' shapes and
  dtypes, colorjax's source and the jax/flax versions. Without `enable()` this is `jitted`.
  """
  return _StoredProgram(jitted, name, static)


def _write(path: pathlib.Path, data: bytes) -> None:
  # A failure to store only costs the next process a trace.
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as f:
      try:
        f.write(data)
      except OSError:
        os.unlink(f.name)
        raise
    os.replace(f.name, path)
    stored = sorted(path.parent.glob("*.jaxexport"), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    for old in stored[MAX_EXPORTED_FILES:]:
      old.unlink(missing_ok=True)
  except OSError as e:
    _log.warning("could not store the exported program %s: %s", path, e)
