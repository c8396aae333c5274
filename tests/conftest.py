"""Test setup: 8 forced host CPU devices, so sharded code is exercised on any machine.

The flag must be set before jax is imported anywhere, which is why it lives here.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS_DIR = REPO_ROOT / "colorjax" / "assets" / "photos"


@pytest.fixture
def photos_dir() -> pathlib.Path:
  """The photos bundled with the package (real, permissively licensed)."""
  return PHOTOS_DIR
