"""The persistent compilation cache: a second `colorjax colorize`, `eval`, `bench` or a resumed
`colorjax train` loads its compiled steps from disk instead of compiling them again.

On by default in the CLI (`colorjax --no-compile-cache ...` turns it off); notebooks call
`enable()`. The cache lives in `$COLORJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/colorjax`, else
`~/.cache/colorjax`, in a folder per CPU model (XLA:CPU entries are native code for the CPU that
compiled them) and is capped at `MAX_SIZE_BYTES`, least recently used entries evicted first. An
explicit `JAX_COMPILATION_CACHE_DIR` wins over all of this.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import platform

import jax

MAX_SIZE_BYTES = 2 * 1024**3
# Compilations faster than this are not worth a file (jax's default is 1 s).
MIN_COMPILE_TIME_S = 0.5


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
  explicit = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if explicit and directory is None:
    return explicit
  path = pathlib.Path(directory) if directory is not None else default_dir()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
  jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
  return str(path)
