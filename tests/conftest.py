"""Test setup: 8 forced host CPU devices, so sharded code is exercised on any machine.

The flag must be set before jax is imported anywhere, which is why it lives here.
"""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One compilation cache for the whole run (subprocesses included): many tests compile the same
# tiny steps, and a cache hit costs milliseconds instead of seconds. It cannot change results.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="colorjax-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS_DIR = REPO_ROOT / "colorjax" / "assets" / "photos"


@pytest.fixture
def photos_dir() -> pathlib.Path:
  """The photos bundled with the package (real, permissively licensed)."""
  return PHOTOS_DIR


@pytest.fixture
def tiny_config():
  """The ECCV16 `tiny` variant: 32-px crops, width 1/16, 8 images per step, no periodic eval."""
  from colorjax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config(str(REPO_ROOT / "configs" / "eccv16.py") + ":tiny")
  c.train.eval_every = 1000
  return c
