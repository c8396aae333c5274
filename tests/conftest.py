"""Test setup: 8 forced host CPU devices, so sharded code is exercised on any machine.

The flag must be set before jax is imported anywhere, which is why it lives here.
"""
import os
import tempfile

# Tests compile hundreds of small programs and run each a few times, so compilation dominates the
# suite. LLVM optimisation level 0 for the generated CPU code makes a tiny train step compile ~3x
# faster; XLA's HLO passes and the library calls (oneDNN/YNNPACK convolutions and dots) are the
# same, and so are the results (train_golden_test pins them). The fully optimised build runs in
# CI's main job (`colorjax train` + `colorize`) and in the benchmarks. A level already set wins.
# Level 0 has one known cost: on some CPUs (seen on an AMD EPYC with AVX-512, jax 0.10.2) a train
# step compiled at level 0 with XLA:CPU's YNNPACK dot or reduce fusions computes wrong gradients
# (the tiny ECCV16 step's gradient norm 0.7% off; two-process losses 1.7e-5 off), while levels
# 1-3 are exact there. Tests that compare two programs to float rounding therefore compile their
# train steps at XLA's default level, as users' are: `users_codegen()`, `users_env()`.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
  _flags += " " + FAST_COMPILE_FLAG
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One compilation cache for the whole run (subprocesses included): many tests compile the same
# tiny steps, and a cache hit costs milliseconds instead of seconds. It cannot change results.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="colorjax-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import contextlib  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402

from absl import logging as absl_logging  # noqa: E402
import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import pytest  # noqa: E402

# Orbax saves a replicated array (the train state on the 8 forced devices) "replica-parallel":
# each device writes a slice, cut by a small program compiled per array shape and device, ~100
# compilations per new model. One replica writing each whole array (Orbax's default on GPUs)
# saves the same values, and every restore reads them the same. Tests in this process save that
# way; the launched runs and the README's commands (subprocesses) keep Orbax's default.
# (Orbax logs every override as a warning; this one is deliberate.)
_verbosity = absl_logging.get_verbosity()
absl_logging.set_verbosity(absl_logging.ERROR)
try:
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
finally:
  absl_logging.set_verbosity(_verbosity)

XLA_DEFAULT_OPTIMIZATION_LEVEL = 3


@contextlib.contextmanager
def users_codegen():
  """Train steps built inside compile at XLA's default optimization level, as outside tests."""
  from colorjax.ops import xla_cpu  # pylint: disable=g-import-not-at-top
  suite_options = xla_cpu.step_compiler_options

  def users_options(remat, backend=None):
    options = suite_options(remat, backend)
    return {**options, "xla_backend_optimization_level": XLA_DEFAULT_OPTIMIZATION_LEVEL} \
        if options else options

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(xla_cpu, "step_compiler_options", users_options)
    yield


def users_env(env: dict[str, str]) -> dict[str, str]:
  """`env` for a subprocess whose programs compile as users' do (without FAST_COMPILE_FLAG)."""
  flags = env.get("XLA_FLAGS", "").split()
  return {**env, "XLA_FLAGS": " ".join(f for f in flags if f != FAST_COMPILE_FLAG)}


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


@pytest.fixture(scope="session")
def inception_pth(tmp_path_factory) -> pathlib.Path:
  """An InceptionV3 state_dict file written by torch.save, in torchvision's (and pytorch-fid's)
  key layout, with random He-scaled conv weights and BatchNorm parameters and statistics, so
  that features stay O(1) through the whole depth (FID tests; skips without torch)."""
  torch = pytest.importorskip("torch")
  from colorjax.models import inception  # pylint: disable=g-import-not-at-top
  generator = torch.Generator().manual_seed(0)
  state_dict = {}
  for key, shape in inception.expected_torch_shapes().items():
    if key.endswith(".conv.weight"):
      fan_in = shape[1] * shape[2] * shape[3]
      value = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
    elif key.endswith((".bn.weight", ".bn.running_var")):
      value = 0.5 + torch.rand(shape, generator=generator)
    else:  # BatchNorm bias and running mean
      value = 0.2 * torch.randn(shape, generator=generator)
    state_dict[key] = value
  state_dict["fc.weight"] = torch.zeros((1008, 2048))  # pytorch-fid's head, ignored
  path = tmp_path_factory.mktemp("inception") / "inception_v3_random.pth"
  torch.save(state_dict, path)
  return path


def tensorboard_values(directory):
  """(step, tag, summary value) of every event file under `directory`, read as the TFRecord
  files they are (length, its CRC, the serialized Event, its CRC); CRCs are not checked."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
  for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
    raw = path.read_bytes()
    offset = 0
    while offset < len(raw):
      (length,) = struct.unpack("<Q", raw[offset:offset + 8])
      event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      out += [(event.step, value.tag, value) for value in event.summary.value]
  return out


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
