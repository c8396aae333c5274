"""The model zoo: builds the generator and discriminator a config asks for.

Models know nothing of training: each is a Flax linen module with `__call__(x, train)`; the
generator takes normalised L (`l_BHW1`) and returns 313 logits at 1/4 resolution (`bins`), tanh
ab/110 (`ab`) or tanh RGB (`rgb`) at full resolution.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp



_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  """Reads a key from a ConfigDict or a plain dict (configs saved as JSON) alike."""
  return cfg[key] if key in cfg else default


def create_generator(model_cfg: Mapping[str, Any], image_size: int) -> nn.Module:
  """The generator of `config.model`; `image_size` fixes the U-Net depth when num_downs is 0."""
  dtype = _DTYPES[_get(model_cfg, "dtype", "float32")]
  name = model_cfg["name"]
  # Imported here so that importing one model module does not import (or wait for) the others.
  if name == "eccv16":
    from colorjax.models.eccv16 import ECCV16

    return ECCV16(width=float(model_cfg["width"]), dtype=dtype,
                  conv_impl=str(_get(model_cfg, "conv_impl", "auto")),
                  remat=bool(_get(model_cfg, "remat", False)))
  if name == "unet":
    from colorjax.models.unet import UNetGenerator, num_downs_for_size
    out_channels = 3 if model_cfg["output"] == "rgb" else 2
    num_downs = int(_get(model_cfg, "num_downs", 0)) or num_downs_for_size(image_size)
    backbone = _semantic_backbone(model_cfg, dtype)
    unet = UNetGenerator(
        out_channels=out_channels,
        ngf=int(model_cfg["ngf"]),
        num_downs=num_downs,
        use_dropout=bool(model_cfg["use_dropout"]),
        skip_connections=bool(model_cfg["skip_connections"]),
        attention=tuple(_get(model_cfg, "attention", ())),
        multiscale_inputs=bool(_get(model_cfg, "multiscale_inputs", False)),
        semantic_channels=_semantic_channels(model_cfg),
        conv_impl=str(_get(model_cfg, "conv_impl", "auto")),
        dtype=dtype,
    )
    if backbone is None:
      return unet
    from colorjax.models.semantic import SemanticGenerator
    return SemanticGenerator(unet, backbone, convention=model_cfg["convention"],
                             trainable=bool(_get(model_cfg, "semantic_trainable", False)))
  raise ValueError(f"unknown model.name {name!r}")


def _semantic_backbone(model_cfg: Mapping[str, Any], dtype) -> nn.Module | None:
  """The backbone of `model.semantic_backbone` (None when '')."""
  name = _get(model_cfg, "semantic_backbone", "")
  if not name:
    return None
  from colorjax.models.semantic import create_semantic_backbone
  return create_semantic_backbone(name, float(_get(model_cfg, "semantic_width", 1.0)), dtype)


def _semantic_channels(model_cfg: Mapping[str, Any]) -> int:
  name = _get(model_cfg, "semantic_backbone", "")
  if not name:
    return 0
  from colorjax.models.semantic import embedding_size
  return embedding_size(name, float(_get(model_cfg, "semantic_width", 1.0)))


def create_discriminator(disc_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
  """The PatchGAN discriminator of `config.disc` (input: concat(L, ab), normalised).

  With `disc.semantic`, it is conditioned on its own copy of the `model.semantic_backbone`
  (seed 002's conditional PatchGAN), wrapped in a `SemanticDiscriminator`.
  """
  from colorjax.models.patchgan import PatchGANDiscriminator
  dtype = _DTYPES[_get(model_cfg, "dtype", "float32")]
  semantic = bool(_get(disc_cfg, "semantic", False))
  backbone = _semantic_backbone(model_cfg, dtype) if semantic else None
  if semantic and backbone is None:
    raise ValueError("config key disc.semantic needs a model.semantic_backbone")
  patchgan = PatchGANDiscriminator(
      ndf=int(disc_cfg["ndf"]), n_layers=int(disc_cfg["n_layers"]),
      semantic_channels=_semantic_channels(model_cfg) if semantic else 0,
      conv_impl=str(_get(model_cfg, "conv_impl", "auto")), dtype=dtype)
  if backbone is None:
    return patchgan
  from colorjax.models.semantic import SemanticDiscriminator
  return SemanticDiscriminator(patchgan, backbone, convention=model_cfg["convention"],
                               trainable=bool(_get(model_cfg, "semantic_trainable", False)))
