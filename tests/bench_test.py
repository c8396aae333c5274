"""Tests of colorjax.bench: the JSON line of `run`, FLOP counting and peak tables."""
import json

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import bench, flops
from colorjax.models import backbones, eccv16

RUN_KEYS = (
    "config", "devices", "device_kind", "global_batch", "image_size", "compile_s", "step_s",
    "step_s_spread", "images_per_s", "flops_per_step", "flops_per_step_analytic", "flops_ratio",
    "gflops_per_s", "peak_flops_per_s", "peak_source", "mfu", "hfu", "memory", "peak_host_rss_bytes",
    "pipeline_images_per_s", "pipeline_to_step_ratio", "real_step_s", "eval_step_s",
    "eval_images_per_s", "eval_compile_s", "load_avg_1m",
)


def _eccv16_forward_flops(batch: int, size: int, width: float) -> float:
  """2 x multiply-adds of ECCV16's convs, from its layer table (closed form)."""
  flops, channels, side = 0.0, 1, size
  for base, n_convs, stride, _ in eccv16._BLOCKS:  # pylint: disable=protected-access
    out = backbones.scaled_channels(base, width)
    for i in range(n_convs):
      if i == n_convs - 1:
        side //= stride
      flops += 2 * batch * side * side * 9 * channels * out
      channels = out
  ch8 = backbones.scaled_channels(256, width)
  flops += 2 * batch * side * side * 16 * channels * ch8   # 4x4 transposed conv, per input pixel
  side *= 2
  flops += 2 * (2 * batch * side * side * 9 * ch8 * ch8)   # two 3x3 convs
  flops += 2 * batch * side * side * ch8 * 313             # 1x1 conv to the logits
  return flops


def test_run_prints_one_json_line_with_the_measurements(tiny_config, capsys):
  result = bench.run(tiny_config, steps=2, include_pipeline=True)
  lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
  assert len(lines) == 1
  printed = json.loads(lines[0])
  for key in RUN_KEYS:
    assert key in printed, key
  assert printed["global_batch"] == tiny_config.train.batch_size == 8
  assert printed["devices"] == len(jax.devices())
  assert printed["step_s_spread"]["min"] <= printed["step_s"] <= printed["step_s_spread"]["max"]
  np.testing.assert_allclose(printed["images_per_s"], 8 / printed["step_s"], rtol=1e-9)
  expected = 3 * _eccv16_forward_flops(8, tiny_config.data.crop_size, tiny_config.model.width)
  np.testing.assert_allclose(printed["flops_per_step_analytic"], expected, rtol=1e-9)
  assert 0.2 < printed["flops_ratio"] < 5
  assert printed["peak_source"].startswith("measured")
  assert 0 < printed["mfu"] < 5 and 0 < printed["hfu"] < 5
  assert printed["memory"]["temp_bytes"] > 0 and printed["memory"]["argument_bytes"] > 0
  assert printed["pipeline_images_per_s"] > 0
  np.testing.assert_allclose(printed["pipeline_to_step_ratio"],
                             printed["pipeline_images_per_s"] / printed["images_per_s"])
  assert printed["eval_images_per_s"] > 0
  assert result == printed


def test_jaxpr_flops_of_matmul_and_transposed_conv():
  x = jnp.zeros((3, 5, 7))
  w = jnp.zeros((7, 11))
  jaxpr = jax.make_jaxpr(lambda x, w: jnp.einsum("bmk,kn->bmn", x, w))(x, w).jaxpr
  assert flops.jaxpr_matmul_flops(jaxpr) == 2 * 3 * 5 * 7 * 11
  # A stride-2 transposed conv: each input pixel meets each of the 4x4 taps once.
  inputs, kernel = jnp.zeros((2, 6, 6, 3)), jnp.zeros((4, 4, 3, 5))
  jaxpr = jax.make_jaxpr(lambda a, k: jax.lax.conv_transpose(
      a, k, (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")))(
          inputs, kernel).jaxpr
  assert flops.jaxpr_matmul_flops(jaxpr) == 2 * 2 * 6 * 6 * 16 * 3 * 5


def test_peak_table():
  assert flops.table_peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert flops.table_peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert flops.table_peak_flops("NVIDIA A100-SXM4-40GB", "float32") == 156e12
  assert flops.table_peak_flops("NVIDIA L4", "bfloat16") == 121e12
  assert flops.table_peak_flops("NVIDIA L40S", "bfloat16") is None
  assert flops.table_peak_flops("TPU v5 lite", "bfloat16") == 197e12
  assert flops.table_peak_flops("TPU v4", "float32") == 275e12
  assert flops.mfu(1e12, 2.0, 1e12) == 0.5
  assert flops.mfu(None, 2.0, 1e12) is None
