"""Tests of compilation_cache: where the cache lives, that compiled programs land there, and the
switches that move or disable it. In subprocesses: the cache is process-wide configuration."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax import export
import numpy as np
from PIL import Image

from colorjax import checkpoint, compilation_cache, config as config_lib, models

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


def test_stored_program_is_exported_once_and_loaded_by_the_next_caller(tmp_path, monkeypatch):
  monkeypatch.setattr(compilation_cache, "_exported_dir", tmp_path / "exported")
  traced = []

  def f(x):
    traced.append(x.shape)
    return jnp.sin(x) * 2 + x.sum()

  x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
  first = compilation_cache.stored_program(jax.jit(f), "f", "v1")
  np.testing.assert_allclose(first(x), np.sin(x) * 2 + x.sum(), rtol=1e-6)
  first(x + 1)  # same signature: no second trace, no second file
  stored = sorted((tmp_path / "exported").iterdir())
  assert traced == [(3, 4)] and [p.suffix for p in stored] == [".jaxexport"]

  def no_export(*args, **kwargs):
    raise AssertionError("exported again although a stored program fits")

  monkeypatch.setattr(export, "export", no_export)
  again = compilation_cache.stored_program(jax.jit(f), "f", "v1")
  np.testing.assert_array_equal(again(x), first(x))
  assert traced == [(3, 4)]
  monkeypatch.undo()
  monkeypatch.setattr(compilation_cache, "_exported_dir", tmp_path / "exported")

  # Another static description or another shape is another program.
  compilation_cache.stored_program(jax.jit(f), "f", "v2")(x)
  compilation_cache.stored_program(jax.jit(f), "f", "v1")(x[:2])
  assert len(list((tmp_path / "exported").iterdir())) == 3

  # A damaged file is replaced, not trusted.
  stored[0].write_bytes(b"not a program")
  np.testing.assert_array_equal(compilation_cache.stored_program(jax.jit(f), "f", "v1")(x),
                                first(x))
  assert export.deserialize(bytearray(stored[0].read_bytes())).in_avals[0].shape == (3, 4)


def test_stored_program_is_plain_jit_while_the_cache_is_off(monkeypatch):
  monkeypatch.setattr(compilation_cache, "_exported_dir", None)

  def no_export(*args, **kwargs):
    raise AssertionError("exported although the cache is off")

  monkeypatch.setattr(export, "export", no_export)
  program = compilation_cache.stored_program(jax.jit(jnp.cos), "cos", "")
  assert float(program(np.float32(0))) == 1.0


_COLORIZE_TWICE = """
import json, sys
from jax import monitoring
from colorjax import cli, compilation_cache, inference
events, traced = [], []
monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
compilation_cache.MIN_COMPILE_TIME_S = 0  # cache even the tiny model's programs
original = inference.generator_output
def counting(*args, **kwargs):
  traced.append(1)
  return original(*args, **kwargs)
inference.generator_output = counting
status = cli.main(sys.argv[1:])
print(json.dumps({"status": status, "traced": len(traced),
                  "misses": events.count("/jax/compilation_cache/cache_misses"),
                  "hits": events.count("/jax/compilation_cache/cache_hits")}))
"""


def test_a_second_colorize_process_neither_traces_nor_compiles_the_model(tmp_path, photos_dir,
                                                                          monkeypatch):
  monkeypatch.chdir(tmp_path)
  shutil.copy(photos_dir / "chelsea.jpg", "chelsea.jpg")
  config = config_lib.base_config().to_dict()
  config["model"]["width"] = 1 / 16
  config["data"]["eval_size"] = 32
  generator = models.create_generator(config["model"], 32)
  variables = jax.jit(lambda k: generator.init(k, jnp.zeros((1, 32, 32, 1)), train=False))(
      jax.random.key(0, impl="rbg"))
  checkpoint.save_model("model", config, variables)
  clean = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "COLORJAX_CACHE"))}
  runs, pictures = [], []
  for out in ("first", "second"):
    result = subprocess.run(
        [sys.executable, "-c", _COLORIZE_TWICE, "colorize", "chelsea.jpg",
         "--checkpoint", "model", "--output", out, "--quiet"],
        env={**clean, "COLORJAX_CACHE_DIR": "cache"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    pictures.append(np.asarray(Image.open(pathlib.Path(out) / "chelsea.png")))
  first, second = runs
  assert first["status"] == second["status"] == 0
  assert first["traced"] == 1 and first["misses"] >= 1
  assert second["traced"] == 0 and second["misses"] == 0 and second["hits"] >= 1
  np.testing.assert_array_equal(pictures[0], pictures[1])
  assert len(list(pathlib.Path("cache").glob("jax-*/exported/*.jaxexport"))) == 1
