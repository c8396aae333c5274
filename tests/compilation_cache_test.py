"""Tests of compilation_cache: where the cache lives, that compiled programs land there, and the
switches that move or disable it. In subprocesses: the cache is process-wide configuration."""
import os
import pathlib
import subprocess
import sys

_PROGRAM = """
import sys, jax, jax.numpy as jnp
from colorjax import cli, compilation_cache
if sys.argv[1] == 'library':
  print(compilation_cache.enable())
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)  # cache even a tiny program
  jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
else:
  cli.main(sys.argv[2:])
  print(jax.config.jax_compilation_cache_dir)
"""


def _run(tmp_path, *args, **env):
  clean = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "COLORJAX_CACHE"))}
  clean.update(env)
  result = subprocess.run([sys.executable, "-c", _PROGRAM, *args], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  return result.stdout.strip().splitlines()[-1]


def test_compiled_programs_are_written_to_the_user_cache_dir(tmp_path):
  used = pathlib.Path(_run(tmp_path, "library", XDG_CACHE_HOME=str(tmp_path / "xdg")))
  assert used.parent == tmp_path / "xdg" / "colorjax" and used.name.startswith("jax-")
  assert any(used.iterdir())  # the compiled program


def test_colorjax_cache_dir_and_explicit_jax_dir_and_the_off_switch(tmp_path):
  used = _run(tmp_path, "library", COLORJAX_CACHE_DIR="mine")  # relative to the cwd
  assert pathlib.Path(used).parent == tmp_path / "mine"
  assert _run(tmp_path, "library", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "j")) == \
      str(tmp_path / "j")
  prior = ["prior", "bundled", "p.npy", "--max-images", "1", "--size", "16"]
  assert _run(tmp_path, "cli", *prior, XDG_CACHE_HOME=str(tmp_path / "x")).startswith(
      str(tmp_path / "x"))
  assert _run(tmp_path, "cli", "--no-compile-cache", *prior,
              XDG_CACHE_HOME=str(tmp_path / "y")) == "None"
  assert not (tmp_path / "y").exists()
