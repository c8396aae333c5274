"""Where metrics go: console (progress, images/s, ETA), TensorBoard event files and JSON lines.

Process 0 writes files (`WORKDIR/tensorboard/`, `WORKDIR/metrics.jsonl`, the eval grids in
`WORKDIR/samples/`); every process logs to the console. TensorBoard events are written with
tensorboardX, which needs no TensorFlow.
"""
from __future__ import annotations

import json
import logging
import pathlib
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from colorjax import flops
from colorjax import workdir as workdir_lib

_log = logging.getLogger(__name__)

SAMPLES_KEY = "eval/gray_model_truth"  # their TensorBoard tag


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StepTimer:
  """Images/s, step time and ETA between log points; time spent in eval/checkpoints excluded.

  With `flops_per_step` (model FLOPs) it also reports achieved TFLOP/s, and with
  `peak_flops_per_s` the model FLOPs utilisation (MFU).
  """

  def __init__(self, global_batch_size: int, start_step: int, *,
               flops_per_step: float | None = None, peak_flops_per_s: float | None = None):
    self.batch = global_batch_size
    self.last_step = start_step
    self.last_time = time.perf_counter()
    self.flops_per_step = flops_per_step
    self.peak_flops_per_s = peak_flops_per_s

  def pause(self) -> None:
    """Restarts the clock, so time spent since the last measure (e.g. in eval) is not counted."""
    self.last_time = time.perf_counter()

  def measure(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps = step - self.last_step
    out = {}
    if steps > 0:
      step_s = (now - self.last_time) / steps
      out = {"perf/step_time_s": step_s, "perf/images_per_s": self.batch / step_s}
      if self.flops_per_step:
        out["perf/model_tflops_per_s"] = self.flops_per_step / step_s / 1e12
        mfu = flops.mfu(self.flops_per_step, step_s, self.peak_flops_per_s)
        if mfu is not None:
          out["perf/mfu"] = mfu
    self.last_step, self.last_time = step, now
    return out


class MetricWriter:
  """Writes scalars, images and text; only process 0 touches the filesystem."""

  def __init__(self, workdir: str | pathlib.Path | None, total_steps: int, *, write_files=True):
    self.total_steps = total_steps
    self.workdir = None if workdir is None else pathlib.Path(workdir)
    self._write_files = write_files
    self.start = time.perf_counter()
    self.first_step: int | None = None
    self._tb = None
    self._jsonl = None
    if workdir is not None and write_files and jax.process_index() == 0:
      workdir = pathlib.Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._tb = _summary_writer_class()(str(workdir / workdir_lib.TENSORBOARD_SUBDIR))
      self._jsonl = open(workdir / workdir_lib.METRICS_JSONL, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.add_scalar(key, value, step)
      self._tb.flush()
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
      self._jsonl.flush()
    _log.info("%s", self._console_line(step, scalars))

  def _console_line(self, step: int, scalars: Mapping[str, float]) -> str:
    if self.first_step is None:
      self.first_step, self.start = step, time.perf_counter()
    parts = [f"step {step}/{self.total_steps}"]
    done = step - self.first_step
    if done > 0:
      eta = (time.perf_counter() - self.start) / done * (self.total_steps - step)
      parts.append(f"ETA {_format_duration(eta)}")
    for key in sorted(scalars):
      if key.startswith(("train/loss", "eval/model/", "eval/gray/fid", "perf/images_per_s",
                         "train/d_loss", "perf/mfu", "data/")):
        parts.append(f"{key}={scalars[key]:.4g}")
    return " | ".join(parts)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """uint8 HxWx3 images, e.g. gray|model|truth grids."""
    if self._tb is not None:
      for key, image in images.items():
        self._tb.add_image(key, np.asarray(image), step, dataformats="HWC")
      self._tb.flush()

  def write_samples(self, step: int, grid: np.ndarray) -> None:
    """The eval's gray | model | truth grid (uint8 HxWx3): to TensorBoard and, on process 0,
    as `WORKDIR/samples/step_<step>.png`."""
    self.write_images(step, {SAMPLES_KEY: grid})
    if self._write_files and self.workdir is not None and jax.process_index() == 0:
      from PIL import Image  # pylint: disable=g-import-not-at-top
      samples = self.workdir / workdir_lib.SAMPLES_SUBDIR
      samples.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.asarray(grid, np.uint8)).save(samples / workdir_lib.sample_name(step))

  def write_text(self, key: str, text: str) -> None:
    if self._tb is not None:
      self._tb.add_text(key, f"```\n{text}\n```", 0)

  def write_parameter_overview(self, gen_params: Any, disc_params: Any = None) -> None:
    from clu import parameter_overview  # pylint: disable=g-import-not-at-top
    for name, params in (("generator", gen_params), ("discriminator", disc_params)):
      if params is None:
        continue
      count = parameter_overview.count_parameters(params)
      _log.info("%s: %s parameters", name, f"{count:,}")
      self.write_text(f"parameters/{name}", parameter_overview.get_parameter_overview(params))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch when it is
  installed (2-3 s of every training run's start) only to accept torch tensors, which colorjax
  never gives it."""
  hidden = "torch" not in sys.modules
  if hidden:
    sys.modules["torch"] = None  # `import torch` raises ImportError, as without torch
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if hidden:
      del sys.modules["torch"]
  return SummaryWriter


def create_writer(workdir: str | pathlib.Path, total_steps: int) -> MetricWriter:
  return MetricWriter(workdir, total_steps)


def setup_console_logging(verbose: bool = False) -> None:
  """Console logging for the CLI: colorjax's own messages at INFO, libraries' at WARNING.

  Without `verbose`, absl (Orbax's warnings on every checkpoint load and save, which ask
  nothing of the user) shows errors only.
  """
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("colorjax").setLevel(logging.DEBUG if verbose else logging.INFO)
  logging.getLogger("absl").setLevel(logging.WARNING if verbose else logging.ERROR)
