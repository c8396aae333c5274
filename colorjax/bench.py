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
     traced with plain XLA convs, x3 for forward + backward (see `model_flops_per_step`), and
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

Helpers for the training loop (MFU in the logs), each computed once per run::

  flops = bench.model_flops_per_step(config, adversarial)["step"]  # traces the model, ~1 s
  peak = bench.peak_flops(config.model.dtype)    # Peak(flops_per_s, source); CPU: ~1 s matmul
  mfu = bench.mfu(flops, step_time_s, peak.flops_per_s)             # None if peak unknown

(`bench.step_flops(jitted.lower(state, batch))` gives XLA's own count instead.)
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import resource
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

# Dense peak FLOP/s per chip (no sparsity), from the vendors' data sheets. 'float32' on NVIDIA
# Ampere and newer is the TF32 tensor-core rate: JAX's default matmul precision on those GPUs uses
# TF32 for float32 matmuls and convs. TPUs run float32 matmuls through the bf16 MXU by default.
PEAK_FLOPS_TABLE: dict[str, dict[str, float]] = {
    "h200": {"bfloat16": 989e12, "float32": 495e12},
    "h100 pcie": {"bfloat16": 756e12, "float32": 378e12},
    "h100": {"bfloat16": 989e12, "float32": 495e12},     # SXM5
    "a100": {"bfloat16": 312e12, "float32": 156e12},
    "v100": {"bfloat16": 125e12, "float32": 15.7e12},    # no bf16 units: the fp16 tensor rate
    "l4": {"bfloat16": 121e12, "float32": 60e12},
    "tpu v4": {"bfloat16": 275e12, "float32": 275e12},
    "tpu v5 lite": {"bfloat16": 197e12, "float32": 197e12},  # v5e
    "tpu v5e": {"bfloat16": 197e12, "float32": 197e12},
    "tpu v5p": {"bfloat16": 459e12, "float32": 459e12},
    "tpu v5": {"bfloat16": 459e12, "float32": 459e12},       # v5p reports 'TPU v5'
    "tpu v6 lite": {"bfloat16": 918e12, "float32": 918e12},  # v6e (Trillium)
    "tpu v6e": {"bfloat16": 918e12, "float32": 918e12},
}
_MATMUL_SIZE = 2048


class Peak(NamedTuple):
  """Peak FLOP/s of the devices used (None when unknown) and where the number comes from."""
  flops_per_s: float | None
  source: str


# ------------------------------------------------------------------------------------------------
# Peak FLOP/s
# ------------------------------------------------------------------------------------------------


def table_peak_flops(device_kind: str, dtype: str = "float32") -> float | None:
  """Per-chip dense peak of a GPU/TPU `device_kind` (e.g. 'NVIDIA H100 80GB HBM3'), or None."""
  kind = device_kind.lower()
  for name, peaks in PEAK_FLOPS_TABLE.items():  # specific names come before their prefixes
    # 'l4' must not match 'L40S': compare it as a whole word.
    matched = name in kind.split() if name == "l4" else name in kind
    if matched:
      return peaks["bfloat16" if dtype == "bfloat16" else "float32"]
  return None


@functools.lru_cache(maxsize=None)
def measured_matmul_flops(size: int = _MATMUL_SIZE, repeats: int = 10) -> float:
  """The best f32 matmul rate (FLOP/s) of JAX's default device: `size`^3 products, best of N.

  The best rather than the median: this is a peak, and other processes only ever slow it down.
  """
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x).lower(a).compile()
  jax.block_until_ready(matmul(a))
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a))
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def peak_flops(dtype: str = "float32", devices: Sequence[jax.Device] | None = None) -> Peak:
  """Peak FLOP/s of `devices` (default: all of JAX's) for MFU.

  GPUs/TPUs: the per-chip table value x the number of chips ('table:<kind> <dtype>'). CPU: a
  measured f32 matmul rate of the whole host ('measured: ...'); forced host devices share the
  same cores, so it is not multiplied by their number (measured once per process, ~1 s).
  """
  devices = list(devices or jax.devices())
  device = devices[0]
  if device.platform == "cpu":
    rate = measured_matmul_flops()
    return Peak(rate, f"measured: f32 {_MATMUL_SIZE}^3 matmul with jax on this host, best of 10 "
                      f"({len(devices)} CPU device(s) sharing {os.cpu_count()} cores)")
  per_chip = table_peak_flops(device.device_kind, dtype)
  if per_chip is None:
    return Peak(None, f"unknown device kind {device.device_kind!r}")
  return Peak(per_chip * len(devices), f"table: {device.device_kind} {dtype} x{len(devices)}")


def mfu(flops_per_step: float | None, step_s: float, peak_flops_per_s: float | None
        ) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s over peak (None when either is unknown)."""
  if not flops_per_step or not peak_flops_per_s or step_s <= 0:
    return None
  return flops_per_step / step_s / peak_flops_per_s


# ------------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------------


def _num_devices(compiled) -> int:
  shardings = jax.tree.leaves(compiled.input_shardings)
  return max((len(s.device_set) for s in shardings), default=1)


def step_flops(compiled_or_lowered) -> float | None:
  """FLOPs of one call of a jitted function, from XLA's cost analysis, summed over devices.

  Takes `jit(f).lower(*args)` (the global program, before optimisation) or its `.compile()`
  (the optimised per-device program, multiplied here by its device count). None if XLA gives
  no count.
  """
  cost = compiled_or_lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  flops = float(cost["flops"])
  if isinstance(compiled_or_lowered, jax.stages.Compiled):
    flops *= _num_devices(compiled_or_lowered)
  return flops


def _conv_flops(eqn) -> float:
  lhs_spec, rhs_spec, _ = eqn.params["dimension_numbers"]
  del lhs_spec
  rhs_shape = eqn.invars[1].aval.shape
  out_size = math.prod(eqn.outvars[0].aval.shape)
  taps = math.prod(rhs_shape[d] for d in rhs_spec[2:])
  in_per_group = rhs_shape[rhs_spec[1]]
  # A transposed conv multiplies by the zeros of its dilated input: count only real products.
  return 2.0 * out_size * taps * in_per_group / math.prod(eqn.params["lhs_dilation"])


def _dot_flops(eqn) -> float:
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
  del lhs_contract, lhs_batch
  rhs_shape = eqn.invars[1].aval.shape
  rhs_free = math.prod(n for i, n in enumerate(rhs_shape)
                       if i not in rhs_contract and i not in rhs_batch)
  return 2.0 * math.prod(eqn.invars[0].aval.shape) * rhs_free


def _sub_jaxprs(value):
  if hasattr(value, "eqns"):
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    yield value.jaxpr
  elif isinstance(value, (list, tuple)):
    for v in value:
      yield from _sub_jaxprs(v)


def jaxpr_matmul_flops(jaxpr) -> float:
  """2 x multiply-adds of every conv and dot_general in a jaxpr (sub-jaxprs included)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "dot_general":
      total += _dot_flops(eqn)
    inner = [jaxpr_matmul_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v)]
    if name == "cond":
      total += max(inner, default=0.0)
    else:
      total += sum(inner) * (eqn.params.get("length", 1) if name == "scan" else 1)
  return total


def forward_flops(module, x_shape: tuple[int, ...], dtype=jnp.float32) -> float:
  """Conv + matmul FLOPs of one training-mode forward pass of a Flax module on `x_shape`."""
  x = jax.ShapeDtypeStruct(x_shape, dtype)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  variables = jax.eval_shape(functools.partial(module.init, train=False), rngs, x)

  def apply(variables, x):
    return module.apply(variables, x, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(0)})

  return jaxpr_matmul_flops(jax.make_jaxpr(apply)(variables, x).jaxpr)


def model_flops_per_step(config: ml_collections.ConfigDict, adversarial: bool | None = None
                         ) -> dict[str, float]:
  """Analytic model FLOPs of one train step of `config` at its global batch and crop size.

  The generator (and discriminator) are traced with plain XLA convs (`model.conv_impl='xla'`),
  so the count does not depend on the lowering. Returns {'generator_forward',
  'discriminator_forward', 'step'}: step = 3 x G forward (forward + both gradients), plus for GAN
  configs 8 x D forward (D's update runs it on real and fake with both gradients, 2 x 3; G's
  adversarial term runs it once more with an input gradient only, 2). `adversarial` (default:
  `config.disc.enabled`) False counts a pretraining step of G alone.
  """
  if adversarial is None:
    adversarial = bool(config.disc.enabled)
  from colorjax import models  # pylint: disable=g-import-not-at-top
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  for key, plain in (("conv_impl", "xla"), ("remat", False)):
    if key in model_cfg:
      model_cfg[key] = plain
  batch, size = config.train.batch_size, config.data.crop_size
  generator = models.create_generator(model_cfg, size)
  out = {"generator_forward": forward_flops(generator, (batch, size, size, 1)),
         "discriminator_forward": 0.0}
  if adversarial:
    disc = models.create_discriminator(config.disc, model_cfg)
    out["discriminator_forward"] = forward_flops(disc, (batch, size, size, 3))
  out["step"] = 3.0 * out["generator_forward"] + 8.0 * out["discriminator_forward"]
  return out


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
  from colorjax import sharding  # pylint: disable=g-import-not-at-top
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
  from colorjax.ops import conv  # pylint: disable=g-import-not-at-top
  m = config.model
  summary = {"model": m.name, "output": m.output, "dtype": m.dtype,
             "conv_impl": conv.resolve_conv_impl(m.conv_impl), "remat": bool(m.remat),
             "disc": bool(config.disc.enabled), "loss": config.loss.kind}
  summary.update({"width": m.width} if m.name == "eccv16" else {"ngf": m.ngf})
  if config.disc.enabled:
    summary.update(ndf=config.disc.ndf, n_layers=config.disc.n_layers)
  return summary


def _eval_benchmark(config, setup, state, mesh, steps: int) -> dict[str, Any]:
  from colorjax import evaluate, sharding  # pylint: disable=g-import-not-at-top
  devices = mesh.devices.size
  batch = -(-config.train.eval_batch_size // devices) * devices  # as evaluate.Evaluator
  size = config.data.eval_size
  step = jax.jit(functools.partial(evaluate._eval_step, generator=setup.generator,  # pylint: disable=protected-access
                                   model_cfg=dict(config.model)),
                 out_shardings=sharding.replicated(mesh))
  variables = evaluate.eval_variables(state)
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


def run(config: ml_collections.ConfigDict, *, steps: int = 5, include_pipeline: bool = True,
        warmup: int = 1, print_json: bool = True) -> dict[str, Any]:
  """Benchmarks `config`'s train step, eval step and input pipeline; prints one JSON line.

  `steps` timed calls of each step follow `warmup` untimed ones. Returns the printed dict.
  """
  from colorjax import sharding, train  # pylint: disable=g-import-not-at-top
  from colorjax.ops import xla_cpu  # pylint: disable=g-import-not-at-top
  if steps < 1 or warmup < 0:
    raise ValueError(f"bench needs steps >= 1 and warmup >= 0, got steps={steps}, "
                     f"warmup={warmup}")
  load_before = os.getloadavg()[0]
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  devices = list(mesh.devices.flat)
  batch_size, size = config.train.batch_size, config.data.crop_size

  setup = train.create_setup(config, None)  # uniform class weights: same cost as real ones
  state, state_shardings = train.create_state(setup, config, mesh)
  adversarial = setup.discriminator is not None
  step = train.make_train_step(setup, state_shardings, mesh, adversarial)
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

  for _ in range(warmup):
    jax.block_until_ready(train_call())
  times = _time_calls(train_call, steps)
  step_s = float(np.median(times))

  xla_flops = step_flops(compiled)
  analytic = model_flops_per_step(config, adversarial)
  peak = peak_flops(config.model.dtype, devices)
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
      "mfu": mfu(analytic["step"], step_s, peak.flops_per_s),
      "hfu": mfu(xla_flops, step_s, peak.flops_per_s),
      "memory": _memory(compiled),
  }

  if include_pipeline:
    train_source, _ = train.create_sources(config.data)
    iterator = train.create_train_iterator(config, train_source)
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
