"""Inference: a loaded model (`Colorizer`) and the eval-mode predictions colorize, eval and the
demo share; what the output kinds mean is `models.heads`'s."""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import checkpoint, color, compilation_cache, models
from colorjax import config as config_lib
from colorjax.models import eccv16, heads


def generator_output(generator, variables, l_BHW1: jax.Array,
                     model_cfg: Mapping[str, Any]) -> jax.Array:
  """The eval-mode generator's raw output for L in [0, 100] (what `heads.output_to_ab` decodes)."""
  l_norm = color.normalize_l(l_BHW1, model_cfg["convention"]).astype(jnp.float32)
  return generator.apply(variables, l_norm, train=False)


def predict_ab(generator, variables, l_BHW1: jax.Array, model_cfg: Mapping[str, Any]) -> jax.Array:
  """Eval-mode prediction: L in [0, 100] -> ab (Lab units) at the generator's output resolution."""
  return heads.output_to_ab(generator_output(generator, variables, l_BHW1, model_cfg), model_cfg)


def predict_rgb(generator, variables, l_BHW1: jax.Array, model_cfg: Mapping[str, Any]) -> jax.Array:
  """Eval-mode prediction of an RGB model: L in [0, 100] -> its RGB in [0, 1] (tanh mapped by
  (x + 1) / 2), at the generator's output resolution."""
  if not heads.is_rgb(model_cfg):
    raise ValueError(f"predict_rgb needs a model with output 'rgb', not {model_cfg['output']!r}")
  out = generator_output(generator, variables, l_BHW1, model_cfg)
  return jnp.clip(heads.output_to_rgb(out), 0.0, 1.0)


class Colorizer:
  """A loaded model ready to colorize: `colorizer(l_BHW1) -> ab_BhwC2`.

  Build it with `Colorizer.from_checkpoint(path)` (an exported model or a training workdir) or
  from a config and variables. The input is L in [0, 100] at `size x size`; the output is ab in
  Lab units at the model's output resolution (1/4 of the input for ECCV16).

  `output` says what the model itself predicts: 'ab' (313 bins or ab), joined with the image's
  own L to colorize it, or 'rgb' (a whole RGB image, `predict_rgb`), which is the colorized image
  itself; calling an RGB model still gives the ab of its RGB.
  """

  def __init__(self, config: Mapping[str, Any], variables: Mapping[str, Any],
               temperature: float | None = None):
    model_cfg = dict(config["model"])
    if temperature is not None:
      if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
      model_cfg["temperature"] = float(temperature)
    self.config = config
    self.model_cfg = model_cfg
    self.size = int(config.get("data", {}).get("eval_size", 256))
    self.generator = models.create_generator(model_cfg, self.size)
    self.variables = jax.device_put(dict(variables))
    self.output = "rgb" if heads.is_rgb(model_cfg) else "ab"
    # Kept on disk while the compilation cache is on: a later process skips tracing the model.
    static = repr((self.size, sorted(model_cfg.items())))
    program = lambda fn: compilation_cache.stored_program(
        jax.jit(functools.partial(fn, self.generator, model_cfg=model_cfg)), fn.__name__, static)
    self._predict = program(predict_ab)
    self._predict_rgb = program(predict_rgb) if self.output == "rgb" else None
    self._output = program(generator_output)

  @classmethod
  def from_checkpoint(cls, path, step: int | None = None, temperature: float | None = None):
    config, variables = checkpoint.load_model(path, step)
    return cls(config, variables, temperature)

  @classmethod
  def from_torch_eccv16(cls, weights_path, temperature: float | None = None):
    """The official ECCV16 release from its PyTorch state_dict file (read without torch)."""
    variables = eccv16.load_torch_eccv16(weights_path)
    return cls(official_eccv16_config(), variables, temperature)

  def __call__(self, l_BHW1: np.ndarray) -> np.ndarray:
    return np.asarray(self._predict(self.variables, np.asarray(l_BHW1, np.float32)))

  def predict_rgb(self, l_BHW1: np.ndarray) -> np.ndarray:
    """RGB in [0, 1], `(B, h, w, 3)`, of a model with `output == 'rgb'`."""
    if self._predict_rgb is None:
      raise ValueError(f"this model predicts {self.model_cfg['output']!r}, not RGB")
    return np.asarray(self._predict_rgb(self.variables, np.asarray(l_BHW1, np.float32)))

  def raw_output(self, l_BHW1: np.ndarray) -> np.ndarray:
    """The generator's output before decoding (313 logits for 'bins' models), so that
    `heads.output_to_ab` can decode it again at another temperature without running the network."""
    return np.asarray(self._output(self.variables, np.asarray(l_BHW1, np.float32)))


def official_eccv16_config() -> dict[str, Any]:
  """The config of the released ECCV16 model (full width, 256 px demo input)."""
  return config_lib.base_config().to_dict()
