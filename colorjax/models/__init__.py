"""The model zoo: builds the generator and discriminator a config asks for.

Models know nothing of training: each is a Flax linen module with `__call__(x, train)`; the
generator takes normalised L (`l_BHW1`) and returns 313 logits at 1/4 resolution (`bins`), tanh
ab/110 (`ab`) or tanh RGB (`rgb`) at full resolution.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from colorjax.models import heads

# The registry imports each model module inside the builder that needs it, so that importing one
# model module (or `heads`) does not import, or wait for, the others.

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  """Reads a key from a ConfigDict or a plain dict (configs saved as JSON) alike."""
  return cfg[key] if key in cfg else default


def create_generator(model_cfg: Mapping[str, Any], image_size: int) -> nn.Module:
  """The generator of `config.model`; `image_size` fixes the U-Net depth when num_downs is 0."""
  dtype = _DTYPES[_get(model_cfg, "dtype", "float32")]
  name = model_cfg["name"]
  if name == "eccv16":
    from colorjax.models.eccv16 import ECCV16

    return ECCV16(width=float(model_cfg["width"]), dtype=dtype,
                  conv_impl=str(_get(model_cfg, "conv_impl", "auto")),
                  remat=bool(_get(model_cfg, "remat", False)))
  if name == "unet":
    from colorjax.models.unet import UNetGenerator, num_downs_for_size
    num_downs = int(_get(model_cfg, "num_downs", 0)) or num_downs_for_size(image_size)
    backbone = _semantic_backbone(model_cfg, dtype)
    input_fusion = backbone is not None and _get(model_cfg, "semantic_fusion",
                                                 "bottleneck") == "input"
    unet = UNetGenerator(
        out_channels=heads.out_channels(model_cfg),
        ngf=int(model_cfg["ngf"]),
        num_downs=num_downs,
        use_dropout=bool(model_cfg["use_dropout"]),
        encoder_dropout=float(_get(model_cfg, "encoder_dropout", 0.0)),
        skip_connections=bool(model_cfg["skip_connections"]),
        attention=tuple(_get(model_cfg, "attention", ())),
        multiscale_inputs=bool(_get(model_cfg, "multiscale_inputs", False)),
        semantic_channels=0 if input_fusion else _semantic_channels(model_cfg),
        conv_impl=str(_get(model_cfg, "conv_impl", "auto")),
        dtype=dtype,
    )
    if backbone is None:
      return unet
    from colorjax.models.semantic import FEATURE_MAPS, SemanticGenerator
    return SemanticGenerator(unet, backbone, convention=model_cfg["convention"],
                             trainable=bool(_get(model_cfg, "semantic_trainable", False)),
                             input_size=int(_get(model_cfg, "semantic_input_size", 0)),
                             fusion="input" if input_fusion else "bottleneck",
                             feature=FEATURE_MAPS.get(model_cfg["semantic_backbone"], "")
                             if input_fusion else "")
  if name in ("fusion", "feature_decoder"):
    return _report001_generator(model_cfg, dtype)
  raise ValueError(f"unknown model.name {name!r}")


def _report001_generator(model_cfg: Mapping[str, Any], dtype) -> nn.Module:
  """Report 001's models 2-4 (colorjax/models/fusion.py); `ngf` = 64 gives the report's widths
  (fusion: encoder 64-128-128-256-256-512-512-256, fusion 256, decoder 128-64-32-16-2;
  feature_decoder: 256-128-64-32-16-2)."""
  from colorjax.models import fusion, semantic
  ngf = int(model_cfg["ngf"])
  widths = lambda *multiples: tuple(max(1, int(ngf * k)) for k in multiples)
  backbone = _semantic_backbone(model_cfg, dtype)
  trainable = bool(_get(model_cfg, "semantic_trainable", False))
  if model_cfg["name"] == "fusion":
    network = fusion.FusionEncoderDecoder(
        semantic_channels=_semantic_channels(model_cfg),
        encoder_features=widths(1, 2, 2, 4, 4, 8, 8, 4), fusion_features=widths(4)[0],
        decoder_features=widths(2, 1, 0.5, 0.25), out_channels=heads.out_channels(model_cfg),
        dtype=dtype)
    return semantic.SemanticGenerator(network, backbone, convention=model_cfg["convention"],
                                      trainable=trainable,
                                      input_size=int(_get(model_cfg, "semantic_input_size", 0)))
  decoder = fusion.FeatureMapDecoder(decoder_features=widths(4, 2, 1, 0.5, 0.25),
                                     out_channels=heads.out_channels(model_cfg), dtype=dtype)
  return semantic.SemanticFeatureDecoder(
      decoder, backbone, feature=semantic.FEATURE_MAPS[model_cfg["semantic_backbone"]],
      convention=model_cfg["convention"], trainable=trainable)


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
                               trainable=bool(_get(model_cfg, "semantic_trainable", False)),
                               input_size=int(_get(model_cfg, "semantic_input_size", 0)))
