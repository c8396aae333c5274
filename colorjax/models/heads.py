"""The output heads: everything that depends on what a generator predicts (`model.output`).

'bins': 313 logits at the network's own resolution (ECCV16's 1/4), decoded by the annealed mean;
'ab': tanh ab/110 at full resolution; 'rgb': a whole tanh RGB image in [-1, 1] at full resolution.
Every function takes the model config (a mapping with at least 'output'), never training objects;
training, evaluation and inference ask here instead of branching on the kind themselves.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from colorjax import color
from colorjax.config import OUTPUTS

_OUT_CHANNELS = {"bins": color.Q, "ab": 2, "rgb": 3}  # one entry per config.OUTPUTS


def _kind(model_cfg: Mapping[str, Any]) -> str:
  kind = model_cfg["output"]
  if kind not in OUTPUTS:
    raise ValueError(f"unknown model.output {kind!r} (one of {', '.join(OUTPUTS)})")
  return kind


def out_channels(model_cfg: Mapping[str, Any]) -> int:
  """The generator's last layer's channels: 313 bins, 2 (ab) or 3 (RGB)."""
  return _OUT_CHANNELS[_kind(model_cfg)]


def is_rgb(model_cfg: Mapping[str, Any]) -> bool:
  """Whether the model's output is a whole RGB image (model.output='rgb') rather than chroma."""
  return _kind(model_cfg) == "rgb"


def decodes_with_temperature(model_cfg: Mapping[str, Any]) -> bool:
  """Whether decoding the output depends on model.temperature (the annealed mean of 'bins')."""
  return _kind(model_cfg) == "bins"


def output_to_ab(out: jax.Array, model_cfg: Mapping[str, Any]) -> jax.Array:
  """Generator output -> ab in Lab units, at the output's own resolution.

  'bins': annealed mean of the 313 logits (temperature model.temperature); 'ab': tanh ab/110;
  'rgb': tanh RGB in [-1, 1], converted to Lab and its ab kept.
  """
  kind = _kind(model_cfg)
  out = out.astype(jnp.float32)
  if kind == "bins":
    return color.decode_annealed_mean(out, float(model_cfg["temperature"]))
  if kind == "ab":
    return color.denormalize_ab(out)
  return color.rgb_to_lab(output_to_rgb(out))[..., 1:]


def output_to_rgb(out: jax.Array) -> jax.Array:
  """An RGB model's tanh output -> sRGB, (x + 1) / 2 (not clipped: a loss sees the raw values)."""
  return (out.astype(jnp.float32) + 1.0) / 2.0


def resize_to(x_BhwC: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize (half-pixel centres) of a batch of ab or RGB maps, on device."""
  if x_BhwC.shape[1:3] == (height, width):
    return x_BhwC
  b, _, _, c = x_BhwC.shape
  return jax.image.resize(x_BhwC, (b, height, width, c), method="bilinear", antialias=False)


def fake_ab_norm(out: jax.Array, model_cfg: Mapping[str, Any], height: int,
                 width: int) -> jax.Array:
  """The generator's chroma as a discriminator sees it: ab/110 at full resolution `height x
  width` (decoded and resized for 'bins', converted for 'rgb', the output itself for 'ab')."""
  if _kind(model_cfg) == "ab":
    return out
  return color.normalize_ab(resize_to(output_to_ab(out, model_cfg), height, width))


def regression_target(model_cfg: Mapping[str, Any], rgb_BHW3: jax.Array,
                      ab_BHW2: jax.Array) -> jax.Array:
  """What a regression loss compares the generator with: the true RGB in [-1, 1] for 'rgb'
  models, the true ab/110 otherwise (`rgb_BHW3` uint8, `ab_BHW2` in Lab units)."""
  if is_rgb(model_cfg):
    return rgb_BHW3.astype(jnp.float32) / 127.5 - 1.0
  return color.normalize_ab(ab_BHW2)


def regression_output(out: jax.Array, model_cfg: Mapping[str, Any], height: int,
                      width: int) -> jax.Array:
  """The generator's side of a regression loss, in the units of `regression_target`: the output
  itself, except that a 'bins' model (seed 000's ECCV16 fine-tuning) regresses its decoded ab."""
  if _kind(model_cfg) == "bins":
    return fake_ab_norm(out, model_cfg, height, width)
  return out


def predicted_rgb(out: jax.Array, model_cfg: Mapping[str, Any], l_norm_BHW1: jax.Array
                  ) -> jax.Array:
  """The generator's color image, sRGB in [0, 1] at the resolution of the normalised L input
  `l_norm_BHW1` (its own RGB for 'rgb' models, else its ab joined with that L)."""
  if is_rgb(model_cfg):
    return output_to_rgb(out)
  height, width = l_norm_BHW1.shape[1:3]
  ab = color.denormalize_ab(fake_ab_norm(out, model_cfg, height, width).astype(jnp.float32))
  l = color.denormalize_l(l_norm_BHW1, model_cfg["convention"])
  return color.lab_to_rgb(jnp.concatenate([l, ab], axis=-1))
