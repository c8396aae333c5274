"""colorjax vs PyTorch: the same training step, timed alternately.

  python -m benchmarks.compare --model eccv16 --size 128 --batch 8 --repeats 5
  python -m benchmarks.compare --model pix2pix --size 128 --batch 4

Both sides take the same host uint8 RGB batch and do the same work per step (Lab conversion and
target encoding inside the step, forward, backward, optimiser update); see torch_models.py.
colorjax runs on one device with the step `colorjax.train` builds (compiled ahead of time);
PyTorch runs eagerly with `torch.set_num_threads(<cores>)`, in the fastest of NCHW and
channels_last with torch's default (per-parameter loop) and its fused Adam (chosen after warm-up,
unless --torch-format / --torch-adam are given). Each side runs in a process of its own, as it
would in use: in one process the two frameworks' buffers share one malloc heap, which then grows
in the middle of the timed repeats (ECCV16 at 128 px, batch 8: 220k page faults in one repeat,
a colorjax step 1.5-2.2x slower). After warm-up, each repeat times `--steps` steps of one side
then of the other (the other process waits), alternating which goes first, so both see the same
machine load; the ratio is reported as the median of the per-repeat ratios (robust to
load that changes between repeats) beside the ratio of the medians, with the CPU seconds each
side's step consumed (both use all cores; on a loaded machine wall time is what the load left).
`--config.KEY=VALUE` overrides colorjax's recipe; the torch network follows its size
(`model.width` for ECCV16, `model.ngf` and `disc.ndf` for pix2pix).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import resource
import statistics
import sys
import time
from typing import Callable

import numpy as np


def colorjax_config(model: str, size: int, batch: int, overrides: dict[str, str]):
  """The colorjax recipe of `model` at `size` px and global batch `batch`."""
  from colorjax import config as config_lib  # pylint: disable=g-import-not-at-top
  sizes = {"data.crop_size": str(size), "data.resize_size": str(size),
           "train.batch_size": str(batch)}
  if model == "eccv16":
    return config_lib.apply_overrides(config_lib.load_config("eccv16"), {**sizes, **overrides})
  sizes["model.num_downs"] = str(int(round(math.log2(size))))  # unet_128 at 128 px, ...
  try:
    config = config_lib.load_config("pix2pix")
  except FileNotFoundError:
    config = config_lib.base_config()
    config.model.name = "unet"
    config.model.output = "ab"
    config.model.convention = "pix2pix"
    config.loss.kind = "l1"
    config.disc.enabled = True
    config.optimizer.update(lr=2e-4, b1=0.5, b2=0.999, weight_decay=0.0, schedule="constant",
                            disc_lr=2e-4, disc_b1=0.5, disc_b2=0.999, frozen=())
  return config_lib.apply_overrides(config, {**sizes, **overrides})


def make_colorjax_step(config) -> tuple[Callable[[np.ndarray], object], float]:
  """(step(rgb_uint8_BHW3) -> metrics, compile seconds) on one device; state kept inside."""
  import jax  # pylint: disable=g-import-not-at-top
  from colorjax import sharding, train  # pylint: disable=g-import-not-at-top
  mesh = sharding.create_mesh(1)
  trainer = train.build(config, mesh)
  state = trainer.state
  step = trainer.step_fn(trainer.setup.discriminator is not None)
  batch_sharding = sharding.batch_sharded(mesh)
  example = np.zeros((config.train.batch_size, config.data.crop_size, config.data.crop_size, 3),
                     np.uint8)
  start = time.perf_counter()
  compiled = step.lower(state, {"rgb": jax.device_put(example, batch_sharding)}).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def run(rgb_uint8_BHW3: np.ndarray):
    holder["state"], metrics = compiled(holder["state"],
                                        {"rgb": jax.device_put(rgb_uint8_BHW3, batch_sharding)})
    return jax.block_until_ready(metrics)

  return run, compile_s


def make_torch_step(model: str, config, channels_last: bool,
                    fused_adam: bool = False) -> Callable[[np.ndarray], object]:
  """The torch step of the network `config` describes (its width, or its ngf and ndf)."""
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  if model == "eccv16":
    return torch_models.make_eccv16_step(width=config.model.width, channels_last=channels_last,
                                         fused_adam=fused_adam)
  return torch_models.make_pix2pix_step(config.data.crop_size, ngf=config.model.ngf,
                                        ndf=config.disc.ndf, n_layers=config.disc.n_layers,
                                        channels_last=channels_last, fused_adam=fused_adam)


def _process_counters() -> dict[str, float]:
  """What a slow repeat can be blamed on: CPU seconds, page faults, context switches (voluntary:
  a thread waited, e.g. for the thread pool; involuntary: the kernel took the core away, e.g. for
  another process) and Python garbage collections."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return {"cpu_s": usage.ru_utime + usage.ru_stime, "minor_faults": usage.ru_minflt,
          "voluntary_switches": usage.ru_nvcsw, "involuntary_switches": usage.ru_nivcsw,
          "gc_collections": sum(g["collections"] for g in gc.get_stats())}


def _time(step: Callable[[np.ndarray], object], rgb: np.ndarray, steps: int,
          counters: list[dict[str, float]] | None = None) -> float:
  """Wall seconds per step over `steps` consecutive steps (per-step counter deltas appended to
  `counters`, see `_process_counters`)."""
  before, start = _process_counters(), time.perf_counter()
  for _ in range(steps):
    result = step(rgb)
  float(result["train/loss"] if isinstance(result, dict) else result)  # results are ready
  seconds = (time.perf_counter() - start) / steps
  if counters is not None:
    after = _process_counters()
    counters.append({k: (after[k] - before[k]) / steps for k in after})
  return seconds


def _summary(times: list[float], batch: int, counters: list[dict[str, float]]) -> dict:
  rates = [batch / t for t in times]
  median = statistics.median(times)
  return {"images_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
          "step_s": median,
          # The slowest and fastest repeat relative to the median step time.
          "step_spread": [min(times) / median - 1.0, max(times) / median - 1.0],
          "cpu_s_per_step": statistics.median(c["cpu_s"] for c in counters),
          "per_repeat": [{"step_s": t, **c} for t, c in zip(times, counters)]}


def _spread_text(summary: dict) -> str:
  low, high = summary["step_spread"]
  return f"step {summary['step_s']:.3f} s ({100 * low:+.0f}%/{100 * high:+.0f}%)"


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _build_side(side: str, model: str, config, rgb: np.ndarray, torch_format: str,
                torch_adam: str) -> tuple[Callable[[np.ndarray], object], dict]:
  """One side's warmed-up step and what it is (colorjax: compile time, conv impl; torch: the
  format and Adam chosen, the fastest after warm-up where `auto`)."""
  from colorjax import bench  # pylint: disable=g-import-not-at-top
  if side == "colorjax":
    from colorjax.ops import conv  # pylint: disable=g-import-not-at-top
    from colorjax.ops import xla_cpu  # pylint: disable=g-import-not-at-top
    step, compile_s = make_colorjax_step(config)
    xla_cpu.run_then_pad_heap(lambda: step(rgb))  # as `colorjax train` does
    for _ in range(bench.WARMUP_STEPS - 1):
      step(rgb)
    return step, {"compile_s": compile_s,
                  "conv_impl": conv.resolve_conv_impl(config.model.conv_impl),
                  "remat": bool(config.model.remat)}
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(_cores())
  formats = {"nchw": False, "channels_last": True}
  adams = {"for-loop": False, "fused": True}
  variants = [(f, a) for f in (formats if torch_format == "auto" else [torch_format])
              for a in (adams if torch_adam == "auto" else [torch_adam])]
  candidates = {v: make_torch_step(model, config, formats[v[0]], adams[v[1]])
                for v in variants}
  for step in candidates.values():
    for _ in range(bench.WARMUP_STEPS):  # oneDNN primitive creation
      step(rgb)
  if len(candidates) > 1:
    trial = {v: min(_time(step, rgb, 1) for _ in range(2)) for v, step in candidates.items()}
    variant = min(trial, key=trial.get)
  else:
    (variant,) = candidates
  step = candidates[variant]
  del candidates
  step(rgb)  # one step with the other candidates' memory freed
  return step, {"format": variant[0], "adam": variant[1], "version": torch.__version__}


def _side_process(connection, side: str, model: str, size: int, batch: int,
                  overrides: dict[str, str], torch_format: str, torch_adam: str,
                  retain_freed_memory: bool) -> None:
  """A worker process: builds one side's step, then times `steps` steps per request."""
  from colorjax.ops import xla_cpu  # pylint: disable=g-import-not-at-top
  # First, before any other thread allocates. False where malloc is not glibc's.
  retained = retain_freed_memory and xla_cpu.retain_freed_memory()
  try:
    config = colorjax_config(model, size, batch, overrides)
    rgb = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)
    step, info = _build_side(side, model, config, rgb, torch_format, torch_adam)
    connection.send(("ready", {**info, "freed_memory_retained": retained}))
    while (steps := connection.recv()) is not None:
      counters: list[dict[str, float]] = []
      connection.send((_time(step, rgb, steps, counters), counters[0]))
  except BaseException as error:  # reported by the parent, with the side's traceback
    import traceback  # pylint: disable=g-import-not-at-top
    connection.send(("error", f"{side}: {traceback.format_exc()}"))
    raise SystemExit(1) from error


class _Side:
  """A side's worker process, asked for timed steps over a pipe."""

  def __init__(self, side: str, *args):
    context = multiprocessing.get_context("spawn")
    self.side, self.info = side, {}
    self.connection, child = context.Pipe()
    self.process = context.Process(target=_side_process, args=(child, side, *args), daemon=True)
    self.process.start()
    child.close()

  def _receive(self):
    try:
      message = self.connection.recv()
    except EOFError:
      raise RuntimeError(f"the {self.side} benchmark process exited "
                         f"(code {self.process.exitcode})") from None
    if isinstance(message, tuple) and message and message[0] == "error":
      raise RuntimeError(f"the {self.side} benchmark process failed:\n{message[1]}")
    return message

  def ready(self) -> None:
    """Waits for the step to be built; `info` then says what it is."""
    self.info = self._receive()[1]

  def time(self, steps: int, counters: list[dict[str, float]]) -> float:
    self.connection.send(steps)
    seconds, counter = self._receive()
    counters.append(counter)
    return seconds

  def close(self) -> None:
    try:
      self.connection.send(None)
    except (BrokenPipeError, OSError):
      pass
    self.process.join(timeout=30)
    if self.process.is_alive():
      self.process.kill()


def compare(model: str, size: int, batch: int, repeats: int = 5, steps: int = 1,
            torch_format: str = "auto", overrides: dict[str, str] | None = None,
            torch_adam: str = "auto", retain_freed_memory: bool = True) -> dict:
  """Runs the comparison and returns its results (also printed)."""
  cores = _cores()
  args = (model, size, batch, overrides or {}, torch_format, torch_adam, retain_freed_memory)
  # One side at a time: their compilation and warm-up would otherwise share the cores.
  sides = {}
  try:
    for side in ("colorjax", "torch"):
      sides[side] = _Side(side, *args)
      sides[side].ready()
    cj_side, torch_side = sides["colorjax"], sides["torch"]
    torch_format, torch_adam = torch_side.info["format"], torch_side.info["adam"]
    load_before = os.getloadavg()[0]
    cj_times, torch_times, cj_counters, torch_counters = [], [], [], []
    for r in range(repeats):
      order = [(cj_side, cj_times, cj_counters), (torch_side, torch_times, torch_counters)]
      for side, times, counters in (order if r % 2 == 0 else order[::-1]):
        times.append(side.time(steps, counters))
  finally:
    for side in sides.values():
      side.close()
  ratios = [t / c for c, t in zip(cj_times, torch_times)]
  result = {
      "model": model, "image_size": size, "batch": batch, "repeats": repeats,
      "steps_per_repeat": steps, "threads": cores, "processes": "one per side",
      "colorjax": {**_summary(cj_times, batch, cj_counters), **cj_side.info},
      "torch": {**_summary(torch_times, batch, torch_counters), **torch_side.info},
      "ratio_median_of_pairs": statistics.median(ratios),
      "ratio_of_medians": statistics.median(torch_times) / statistics.median(cj_times),
      "ratio_min_max": [min(ratios), max(ratios)],
      "load_avg_1m": [load_before, os.getloadavg()[0]],
      "retain_freed_memory": (cj_side.info["freed_memory_retained"] and
                              torch_side.info["freed_memory_retained"]),
      "per_repeat_images_per_s": {"colorjax": [batch / t for t in cj_times],
                                  "torch": [batch / t for t in torch_times]},
  }
  cj, tt = result["colorjax"], result["torch"]
  print(f"{model} {size}x{size} batch {batch}, {repeats} alternating repeats of {steps} step(s), "
        f"{cores} threads, load {result['load_avg_1m'][0]:.1f}->{result['load_avg_1m'][1]:.1f}"
        f"{', freed memory retained' if result['retain_freed_memory'] else ''}, "
        f"one process per side")
  print(f"  colorjax ({cj['conv_impl']}): {cj['images_per_s']:.3f} img/s "
        f"[{cj['min']:.3f}-{cj['max']:.3f}], {_spread_text(cj)}, "
        f"{cj['cpu_s_per_step']:.2f} CPU s/step, compile {cj['compile_s']:.1f} s")
  print(f"  torch {tt['version']} ({torch_format}, {torch_adam} Adam): "
        f"{tt['images_per_s']:.3f} img/s "
        f"[{tt['min']:.3f}-{tt['max']:.3f}], {_spread_text(tt)}, "
        f"{tt['cpu_s_per_step']:.2f} CPU s/step")
  print(f"  colorjax / torch: {result['ratio_median_of_pairs']:.2f}x (median of per-repeat "
        f"ratios, range {min(ratios):.2f}-{max(ratios):.2f}; ratio of medians "
        f"{result['ratio_of_medians']:.2f}x)")
  print(json.dumps(result), flush=True)
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", choices=("eccv16", "pix2pix"), default="eccv16")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=1, help="steps per side per repeat")
  parser.add_argument("--torch-format", choices=("auto", "nchw", "channels_last"),
                      default="auto")
  parser.add_argument("--torch-adam", choices=("auto", "for-loop", "fused"), default="auto",
                      help="torch.optim.Adam's implementation (auto: the faster after warm-up)")
  parser.add_argument("--retain-freed-memory", action=argparse.BooleanOptionalAction,
                      default=os.environ.get("COLORJAX_RETAIN_FREED_MEMORY", "1") != "0",
                      help="colorjax.ops.xla_cpu.retain_freed_memory() first, as `colorjax "
                           "train` does (glibc malloc keeps freed memory: no page faults on each "
                           "step's buffers; both sides). Default on, unless "
                           "COLORJAX_RETAIN_FREED_MEMORY=0")
  args, rest = parser.parse_known_args(argv)
  overrides = {}
  for arg in rest:
    if not arg.startswith("--config.") or "=" not in arg:
      parser.error(f"unrecognised argument {arg!r} (colorjax overrides are --config.KEY=VALUE)")
    key, _, value = arg[len("--config."):].partition("=")
    overrides[key] = value
  compare(args.model, args.size, args.batch, args.repeats, args.steps, args.torch_format,
          overrides, args.torch_adam, args.retain_freed_memory)
  return 0


if __name__ == "__main__":
  sys.exit(main())
