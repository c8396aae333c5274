"""Report 001's encoder-decoders (colorjax/models/fusion.py) against torch models of the same
layers with the same weights, and the semantic wiring of the backbones into them and into the
U-Net (report 002's features concatenated with the grayscale input)."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from colorjax import color
from colorjax.models import backbones, fusion, semantic, unet


def _l_norm(photos_dir, n=2, size=64):
  rgb = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC))
                  for p in sorted(photos_dir.glob("*.jpg"))[:n]])
  lab = np.asarray(color.rgb_to_lab(jnp.asarray(rgb, jnp.float32) / 255.0))
  return jnp.asarray(lab[..., :1] / 50.0 - 1.0)  # the 'pix2pix' L normalisation


def _torch_conv(x, conv_params, stride=1):
  weight = torch.from_numpy(np.asarray(conv_params["kernel"]).transpose(3, 2, 0, 1).copy())
  bias = torch.from_numpy(np.array(conv_params["bias"]))
  pad = (weight.shape[-1] - 1) // 2
  return F.conv2d(x, weight, bias, stride=stride, padding=pad)


def _torch_decode(x, params, upsample, out_hw):
  for i, up in enumerate(upsample):
    x = F.relu(_torch_conv(x, params[f"decoder_{i}"]))
    if up:
      x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
  x = torch.tanh(_torch_conv(x, params["decoder_out"]))
  return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)


def _nchw(x):
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def test_fusion_encoder_decoder_matches_torch(photos_dir):
  l_norm = _l_norm(photos_dir)
  embedding = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6)), jnp.float32)
  model = fusion.FusionEncoderDecoder(
      semantic_channels=6, encoder_features=(4, 8, 8, 16, 16, 32, 32, 16), fusion_features=16,
      decoder_features=(8, 4, 2, 1))
  variables = jax.jit(lambda x, e: model.init(jax.random.key(0), x, train=False,
                                              semantic_BC=e))(l_norm, embedding)
  got = jax.jit(lambda v, x, e: model.apply(v, x, train=False, semantic_BC=e))(
      variables, l_norm, embedding)
  assert got.shape == (2, 64, 64, 2)

  p = variables["params"]
  with torch.no_grad():
    x = _nchw(l_norm)
    for i, stride in enumerate(model.encoder_strides):
      x = F.relu(_torch_conv(x, p[f"encoder_{i}"], stride))
    assert x.shape[-2:] == (8, 8)  # three stride-2 convolutions: H/8
    repeated = torch.from_numpy(np.asarray(embedding))[:, :, None, None].expand(-1, -1, 8, 8)
    x = F.relu(_torch_conv(torch.cat([x, repeated], 1), p["fusion"]))
    want = _torch_decode(x, p, model.decoder_upsample, (64, 64)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_feature_decoder_decodes_the_frozen_vgg16_pool5(photos_dir):
  l_norm = _l_norm(photos_dir)
  backbone = semantic.create_semantic_backbone("vgg16", width=1 / 16)
  decoder = fusion.FeatureMapDecoder(decoder_features=(8, 8, 4, 4, 2))
  model = semantic.SemanticFeatureDecoder(decoder, backbone, feature="pool5")
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(l_norm)
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, l_norm)
  assert got.shape == (2, 64, 64, 2)

  gray = backbones.gray_rgb_from_l(jnp.clip((l_norm + 1.0) * 50.0, 0.0, 100.0))
  _, acts = jax.jit(lambda v, x: backbone.apply(v, x, method="features"))(
      {"params": variables["params"]["semantic_backbone"]}, gray)
  assert acts["pool5"].shape == (2, 2, 2, 32)  # 1/32 of the input, VGG16's last map (512 / 16)
  with torch.no_grad():
    want = _torch_decode(_nchw(acts["pool5"]), variables["params"]["decoder"],
                         decoder.decoder_upsample, (64, 64)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, atol=1e-5)

  # Frozen: no gradient reaches the backbone, the decoder gets one.
  grads = jax.jit(jax.grad(lambda params: jnp.sum(model.apply({"params": params}, l_norm,
                                                              train=False) ** 2)))(
      variables["params"])
  assert all(float(jnp.abs(g).max()) == 0.0
             for g in jax.tree.leaves(grads["semantic_backbone"]))
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["decoder"]))


def test_input_fusion_concatenates_upsampled_resnet18_features_with_l(photos_dir):
  l_norm = _l_norm(photos_dir)
  backbone = semantic.create_semantic_backbone("resnet18", width=1 / 16)
  net = unet.UNetGenerator(ngf=4, num_downs=4, use_dropout=False)
  model = semantic.SemanticGenerator(net, backbone, fusion="input", feature="layer4")
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(l_norm)
  # layer4 has 32 channels at this width: the first conv sees 1 + 32 input channels.
  assert variables["params"]["generator"]["down_0"]["conv"]["kernel"].shape == (4, 4, 33, 4)
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, l_norm)

  gray = backbones.gray_rgb_from_l(jnp.clip((l_norm + 1.0) * 50.0, 0.0, 100.0))
  backbone_vars = {c: v["semantic_backbone"] for c, v in variables.items()}
  _, acts = jax.jit(lambda v, x: backbone.apply(v, x, method="features"))(backbone_vars, gray)
  upsampled = F.interpolate(_nchw(acts["layer4"]), size=(64, 64), mode="bilinear",
                            align_corners=False).numpy().transpose(0, 2, 3, 1)
  net_vars = {c: v["generator"] for c, v in variables.items()}
  want = jax.jit(lambda v, x, m: net.apply(v, x, train=False, semantic_map_BHWC=m))(
      net_vars, l_norm, jnp.asarray(upsampled))
  np.testing.assert_allclose(got, want, atol=1e-5)
