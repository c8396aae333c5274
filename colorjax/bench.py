"""Throughput benchmark of a config's train and eval steps and of its input pipeline.

`colorjax bench --config SPEC --steps N` calls `run(config, steps=N)`, which prints one JSON
line and returns the same dict. What it measures, in this order:

  1. The train step of `colorjax.train` (the one training runs: D then G for GAN configs),
     compiled ahead of time (`jit(...).lower(...).compile()`, `compile_s`), warmed up, then timed
     step by step with `block_until_ready` on a synthetic, device-resident uint8 batch:
     `step_s` (median), `step_s_spread` (min, max, IQR), `images_per_s`.
  2. FLOPs: `flops_per_step` from XLA's cost analysis of the compiled step (all devices; it
     counts what the chosen lowering executes, e.g. Winograd convs do fewer multiplications) and
     `flops_per_step_analytic`, the model FLOPs: 2 x MACs of every conv and matmul of the model
     traced with plain XLA convs, x3 for forward + backward (see `train.model_flops_per_step`), and
     their ratio. `gflops_per_s` and `mfu` use the model FLOPs (the usual definition of MFU,
     independent of how a conv is lowered); `xla_gflops_per_s` and `hfu` (hardware FLOPs
     utilisation) use XLA's count. Winograd convs execute about half the model FLOPs, so on CPU
     `mfu` can exceed `hfu` and even 1.
  3. `peak_flops_per_s` (all devices used): a table of dense per-chip peaks for known GPUs/TPUs
     at the config's dtype, or on CPU a measured f32 matmul rate of this host (`peak_source`;
     measured in the same process, so on a busy host it is as low as the step's rate).
  4. `memory`: XLA's `memory_analysis()` of the compiled train step (bytes of arguments,
     outputs, aliased (donated) buffers, temporaries, and peak where reported), and the process's
     peak host RSS.
  5. With `include_pipeline`: the real grain input pipeline alone (host-only, this config's
     crop/batch: `pipeline_images_per_s`, `pipeline_to_step_ratio` > 1 means it keeps up with the
     step), and the step fed by it (`real_step_s`, `real_images_per_s`).
  6. The eval step of `colorjax.evaluate` (metrics included) at `data.eval_size` and
     `train.eval_batch_size`: `eval_compile_s`, `eval_step_s`, `eval_images_per_s`.

On a shared machine timings vary: `load_avg_1m` (before, after) is reported beside them.

The FLOP and MFU helpers it uses live in `colorjax.flops`.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from colorjax import checkpoint, flops, sharding, train
from colorjax.ops import conv, xla_cpu

# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def _spread(times: Sequence[float]) -> dict[str, float]:
  q25, q75 = np.percentile(times, [25, 75])
  return {"min": float(np.min(times)), "max": float(np.max(times)), "iqr": float(q75 - q25),
          "n": len(times)}


def _time_calls(call: Callable[[], Any], steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return times


def _memory(compiled) -> dict[str, int] | None:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # not every backend reports it
  if stats is None:
    return None
  keys = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
          "temp_size_in_bytes", "generated_code_size_in_bytes", "peak_memory_in_bytes")
  out = {k.replace("_size_in_bytes", "_bytes").replace("_in_bytes", "_bytes"):
         int(getattr(stats, k)) for k in keys if getattr(stats, k, None) is not None}
  # What the step holds at once: its inputs, outputs not written over donated inputs, temps.
  out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                        + out["temp_bytes"])
  return out


def _peak_rss_bytes() -> int:
  # ru_maxrss is KiB on Linux, bytes on macOS.
  scale = 1 if platform.system() == "Darwin" else 1024
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def synthetic_batch(batch_size: int, size: int, mesh, seed: int = 0) -> dict[str, jax.Array]:
  """A device-resident {'rgb': uint8 (B, size, size, 3)} batch split on the mesh's data axis."""
  rgb = np.random.default_rng(seed).integers(0, 256, (batch_size, size, size, 3), np.uint8)
  return {"rgb": jax.device_put(rgb, sharding.batch_sharded(mesh))}


def _pipeline_rate(iterator, batches: int) -> float:
  """Images/s of a host iterator (its first batch, the pipeline's start-up, not counted)."""
  next(iterator)
  images = 0
  start = time.perf_counter()
  for _ in range(batches):
    images += int(next(iterator)["rgb"].shape[0])
  return images / (time.perf_counter() - start)


def _config_summary(config: ml_collections.ConfigDict) -> dict[str, Any]:
  m = config.model
  summary = {"model": m.name, "output": m.output, "dtype": m.dtype,
             "conv_impl": conv.resolve_conv_impl(m.conv_impl), "remat": bool(m.remat),
             "disc": bool(config.disc.enabled), "loss": config.loss.kind}
  summary.update({"width": m.width} if m.name == "eccv16" else {"ngf": m.ngf})
  if config.disc.enabled:
    summary.update(ndf=config.disc.ndf, n_layers=config.disc.n_layers)
  return summary


def _eval_benchmark(config, setup, state, mesh, steps: int) -> dict[str, Any]:
  evaluator = train.create_evaluator(config, setup.generator, mesh, source=None)
  batch, step = evaluator.batch_size, evaluator.step
  size = config.data.eval_size
  variables = checkpoint.generator_variables(state)
  rgb = synthetic_batch(batch, size, mesh, seed=1)["rgb"]
  valid = jax.device_put(np.ones((batch,), bool), sharding.batch_sharded(mesh))
  start = time.perf_counter()
  compiled = step.lower(variables, rgb, valid).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(variables, rgb, valid))
  times = _time_calls(lambda: compiled(variables, rgb, valid), steps)
  eval_step_s = float(np.median(times))
  return {"eval_batch": batch, "eval_image_size": size, "eval_compile_s": compile_s,
          "eval_step_s": eval_step_s, "eval_step_s_spread": _spread(times),
          "eval_images_per_s": batch / eval_step_s, "eval_memory": _memory(compiled)}


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------


# The first steps page-fault in their buffers while the retained heap grows to its steady size
# (ECCV16, 128 px, batch 8, freed memory retained: ~249k, ~1k and ~232k minor faults in steps
# 1-3, none from step 4 on); timing them would put that one-off cost into the spread.
WARMUP_STEPS = 3


def run(config: ml_collections.ConfigDict, *, steps: int = 5, include_pipeline: bool = True,
        warmup: int = WARMUP_STEPS, print_json: bool = True) -> dict[str, Any]:
  """Benchmarks `config`'s train step, eval step and input pipeline; prints one JSON line.

  `steps` timed calls of each step follow `warmup` untimed ones. Returns the printed dict.
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f"bench needs steps >= 1 and warmup >= 0, got steps={steps}, "
                     f"warmup={warmup}")
  load_before = os.getloadavg()[0]
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  devices = list(mesh.devices.flat)
  batch_size, size = config.train.batch_size, config.data.crop_size

  trainer = train.build(config, mesh)  # uniform class weights: same cost as real ones
  setup, state = trainer.setup, trainer.state
  adversarial = setup.discriminator is not None
  step = trainer.step_fn(adversarial)
  batch = synthetic_batch(batch_size, size, mesh)

  # make_train_step jits with these (see colorjax.ops.xla_cpu); reported with the results.
  compiler_options = xla_cpu.step_compiler_options(bool(config.model.remat))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  def train_call():
    nonlocal state
    state, metrics = compiled(state, batch)
    return metrics

  for i in range(warmup):
    if i == 0:  # the heap padded after the first step, as `colorjax train` does
      xla_cpu.run_then_pad_heap(train_call)
    else:
      jax.block_until_ready(train_call())
  times = _time_calls(train_call, steps)
  step_s = float(np.median(times))

  xla_flops = flops.step_flops(compiled)
  analytic = train.model_flops_per_step(config, adversarial)
  peak = flops.peak_flops(config.model.dtype, devices)
  result: dict[str, Any] = {
      "config": _config_summary(config),
      "backend": jax.default_backend(),
      "devices": len(devices),
      "device_kind": devices[0].device_kind,
      "global_batch": batch_size,
      "image_size": size,
      "adversarial": adversarial,
      "compile_s": compile_s,
      "step_s": step_s,
      "step_s_spread": _spread(times),
      "images_per_s": batch_size / step_s,
      "flops_per_step": xla_flops,
      "flops_per_step_analytic": analytic["step"],
      "flops_ratio": xla_flops / analytic["step"] if xla_flops and analytic["step"] else None,
      "gflops_per_s": analytic["step"] / step_s / 1e9,
      "xla_gflops_per_s": xla_flops / step_s / 1e9 if xla_flops else None,
      "peak_flops_per_s": peak.flops_per_s,
      "peak_source": peak.source,
      "mfu": flops.mfu(analytic["step"], step_s, peak.flops_per_s),
      "hfu": flops.mfu(xla_flops, step_s, peak.flops_per_s),
      "memory": _memory(compiled),
  }

  if include_pipeline:
    train_source, _ = train.create_sources(config.data)
    iterator = train.train_iterator_from_config(config, train_source)
    pipeline = _pipeline_rate(iterator, batches=max(2 * steps, 10))
    result["pipeline_images_per_s"] = pipeline
    result["pipeline_to_step_ratio"] = pipeline / result["images_per_s"]

    def real_call():
      nonlocal state
      state, metrics = compiled(state, sharding.shard_batch(next(iterator), mesh))
      return metrics

    jax.block_until_ready(real_call())
    real_times = _time_calls(real_call, steps)
    result["real_step_s"] = float(np.median(real_times))
    result["real_step_s_spread"] = _spread(real_times)
    result["real_images_per_s"] = batch_size / result["real_step_s"]

  result.update(_eval_benchmark(config, setup, state, mesh, steps))
  result["peak_host_rss_bytes"] = _peak_rss_bytes()
  result["load_avg_1m"] = [load_before, os.getloadavg()[0]]
  result["host_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
      else os.cpu_count()
  result["jax_version"] = jax.__version__
  result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  result["compiler_options"] = compiler_options
  result["host_malloc_retains_freed_memory"] = xla_cpu.is_retaining_freed_memory()
  if print_json:
    print(json.dumps(result), flush=True)
  return result
