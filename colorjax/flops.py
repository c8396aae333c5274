"""FLOP accounting: model FLOPs of a train step, XLA's count, devices' peak FLOP/s and MFU.

Used by the training loop (MFU in the logs) and by `colorjax bench`::

  flops = flops.train_step_flops(generator, discriminator, batch, size)["step"]  # traces, ~1 s
  peak = flops.peak_flops(dtype)    # Peak(flops_per_s, source); CPU: a ~1 s matmul
  mfu = flops.mfu(flops, step_time_s, peak.flops_per_s)             # None if peak unknown

(`flops.step_flops(jitted.lower(state, batch))` gives XLA's own count instead.)
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

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
_MATMUL_SIZE = 1024  # 2 GFLOP a product: measuring takes <1 s on a 2-core CPU, at the 2048 rate


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
  same cores, so it is not multiplied by their number (measured once per process, <1 s).
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


def train_step_flops(generator, discriminator, batch_size: int, size: int) -> dict[str, float]:
  """Analytic model FLOPs of one train step at `batch_size` x `size` x `size`.

  Pass the models built with plain XLA convs (`model.conv_impl='xla'`), so that the count does
  not depend on the lowering, and `discriminator=None` for a step of G alone (pretraining or no
  GAN). Returns {'generator_forward', 'discriminator_forward', 'step'}: step = 3 x G forward
  (forward + both gradients), plus for GAN steps 8 x D forward (D's update runs it on real and
  fake with both gradients, 2 x 3; G's adversarial term runs it once more with an input gradient
  only, 2).
  """
  out = {"generator_forward": forward_flops(generator, (batch_size, size, size, 1)),
         "discriminator_forward": 0.0}
  if discriminator is not None:
    out["discriminator_forward"] = forward_flops(discriminator, (batch_size, size, size, 3))
  out["step"] = 3.0 * out["generator_forward"] + 8.0 * out["discriminator_forward"]
  return out
