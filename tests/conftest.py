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
import shutil  # noqa: E402

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


def flip_a_bit_of_the_largest_file(folder: pathlib.Path, *, divisor: int,
                                   bit: int) -> pathlib.Path:
  """Damages a checkpoint: XORs `bit` into byte `len // divisor` of the largest file below
  `folder`; returns that file."""
  largest = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  content = bytearray(largest.read_bytes())
  content[len(content) // divisor] ^= bit
  largest.write_bytes(bytes(content))
  return largest


CHROMIUM_HINT = ("install with `apt-get update && apt-get install -y chromium chromium-driver` and "
                 "`pip install -e '.[test]'`")


def chromium_driver(window_size: str, page_load_timeout_s: int):
  """A headless Chromium under Selenium (Debian's chromium + chromium-driver, as CI installs);
  skips the test when either is missing. The flags keep Chromium off the (closed) network."""
  webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium missing; {CHROMIUM_HINT}")
  chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)),
                  None)
  chromedriver = shutil.which("chromedriver")
  if chromium is None or chromedriver is None:
    pytest.skip(f"chromium / chromedriver not installed; {CHROMIUM_HINT}")
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync",
               "--disable-dev-shm-usage", f"--window-size={window_size}"):
    options.add_argument(flag)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(chromedriver), options=options)
  driver.set_page_load_timeout(page_load_timeout_s)
  return driver
