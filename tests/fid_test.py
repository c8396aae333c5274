"""FID: the Flax InceptionV3 against a PyTorch model of pytorch-fid's layout, weight import, FID.

The reference is a PyTorch InceptionV3 written here from the published layout of pytorch-fid's
`fid_inception_v3` (torchvision's InceptionV3 with TensorFlow's pooling: average pools that exclude
the padding, a max pool in Mixed_7c), with random weights and random BatchNorm statistics, run on
pytorch-fid's preprocessing (`F.interpolate(..., 299, bilinear, align_corners=False)`, 2x - 1).
Its state_dict goes through a real file and `read_state_dict`.
"""
import jax
import numpy as np
import pytest
from PIL import Image

from colorjax import fid, metrics, torch_weights
from colorjax.models import inception

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

# torchvision's inception_v3 has 27,161,264 parameters (its model card); less the auxiliary
# classifier (conv0 768*128 + BN 2*128, conv1 128*768*5*5 + BN 2*768, fc 768*1000 + 1000 =
# 3,326,696) and the 2048 -> 1000 fc (2,049,000). pytorch-fid's FID blocks change pooling only.
FID_INCEPTION_PARAMS = 27_161_264 - 3_326_696 - 2_049_000
BATCH = 4  # one compiled shape for the whole file


# ----------------------------------------------------------------------------------------------
# The PyTorch reference
# ----------------------------------------------------------------------------------------------


class TorchConvBN(nn.Module):

  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=1e-3)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x, tf_pooling=True):
  """TensorFlow's SAME average pool (padding excluded), or torchvision's (padding counted)."""
  return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=not tf_pooling)


class TorchMixedA(nn.Module):

  def __init__(self, cin, pool_features, tf_pooling=True):
    super().__init__()
    self.tf_pooling = tf_pooling
    self.branch1x1 = TorchConvBN(cin, 64, 1)
    self.branch5x5_1 = TorchConvBN(cin, 48, 1)
    self.branch5x5_2 = TorchConvBN(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = TorchConvBN(cin, 64, 1)
    self.branch3x3dbl_2 = TorchConvBN(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = TorchConvBN(96, 96, 3, padding=1)
    self.branch_pool = TorchConvBN(cin, pool_features, 1)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(tf_avg_pool(x, self.tf_pooling))], 1)


class TorchMixedB(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = TorchConvBN(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = TorchConvBN(cin, 64, 1)
    self.branch3x3dbl_2 = TorchConvBN(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = TorchConvBN(96, 96, 3, stride=2)

  def forward(self, x):
    return torch.cat([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        F.max_pool2d(x, 3, stride=2)], 1)


class TorchMixedC(nn.Module):

  def __init__(self, cin, c7, tf_pooling=True):
    super().__init__()
    self.tf_pooling = tf_pooling
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    self.branch1x1 = TorchConvBN(cin, 192, 1)
    self.branch7x7_1 = TorchConvBN(cin, c7, 1)
    self.branch7x7_2 = TorchConvBN(c7, c7, **row)
    self.branch7x7_3 = TorchConvBN(c7, 192, **col)
    self.branch7x7dbl_1 = TorchConvBN(cin, c7, 1)
    self.branch7x7dbl_2 = TorchConvBN(c7, c7, **col)
    self.branch7x7dbl_3 = TorchConvBN(c7, c7, **row)
    self.branch7x7dbl_4 = TorchConvBN(c7, c7, **col)
    self.branch7x7dbl_5 = TorchConvBN(c7, 192, **row)
    self.branch_pool = TorchConvBN(cin, 192, 1)

  def forward(self, x):
    d = x
    for i in range(1, 6):
      d = getattr(self, f"branch7x7dbl_{i}")(d)
    return torch.cat([
        self.branch1x1(x),
        self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
        d,
        self.branch_pool(tf_avg_pool(x, self.tf_pooling))], 1)


class TorchMixedD(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = TorchConvBN(cin, 192, 1)
    self.branch3x3_2 = TorchConvBN(192, 320, 3, stride=2)
    self.branch7x7x3_1 = TorchConvBN(cin, 192, 1)
    self.branch7x7x3_2 = TorchConvBN(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = TorchConvBN(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = TorchConvBN(192, 192, 3, stride=2)

  def forward(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class TorchMixedE(nn.Module):

  def __init__(self, cin, max_pool, tf_pooling=True):
    super().__init__()
    self.max_pool = max_pool
    self.tf_pooling = tf_pooling
    self.branch1x1 = TorchConvBN(cin, 320, 1)
    self.branch3x3_1 = TorchConvBN(cin, 384, 1)
    self.branch3x3_2a = TorchConvBN(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = TorchConvBN(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = TorchConvBN(cin, 448, 1)
    self.branch3x3dbl_2 = TorchConvBN(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = TorchConvBN(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = TorchConvBN(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = TorchConvBN(cin, 192, 1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = (F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool
              else tf_avg_pool(x, self.tf_pooling))
    return torch.cat([
        self.branch1x1(x),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
        self.branch_pool(pooled)], 1)


class TorchFidInception(nn.Module):
  """pytorch-fid's FID InceptionV3 up to pool3, plus its unused 1008-way fc; with
  `tf_pooling=False` torchvision's inception_v3 (its pooling; 1000-way fc, no AuxLogits here)."""

  def __init__(self, tf_pooling=True):
    super().__init__()
    p = dict(tf_pooling=tf_pooling)
    self.Conv2d_1a_3x3 = TorchConvBN(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = TorchConvBN(32, 32, 3)
    self.Conv2d_2b_3x3 = TorchConvBN(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = TorchConvBN(64, 80, 1)
    self.Conv2d_4a_3x3 = TorchConvBN(80, 192, 3)
    self.Mixed_5b = TorchMixedA(192, 32, **p)
    self.Mixed_5c = TorchMixedA(256, 64, **p)
    self.Mixed_5d = TorchMixedA(288, 64, **p)
    self.Mixed_6a = TorchMixedB(288)
    self.Mixed_6b = TorchMixedC(768, 128, **p)
    self.Mixed_6c = TorchMixedC(768, 160, **p)
    self.Mixed_6d = TorchMixedC(768, 160, **p)
    self.Mixed_6e = TorchMixedC(768, 192, **p)
    self.Mixed_7a = TorchMixedD(768)
    self.Mixed_7b = TorchMixedE(1280, max_pool=False, **p)
    self.Mixed_7c = TorchMixedE(2048, max_pool=tf_pooling, **p)
    self.fc = nn.Linear(2048, 1008 if tf_pooling else 1000)

  def pool3(self, x):
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, stride=2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def randomize(model: nn.Module, seed: int) -> None:
  """He-scaled conv weights and random BatchNorm affine parameters and running statistics, so
  activations stay O(1) through the whole depth and every BN term matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
      elif isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        module.weight.copy_(0.5 + torch.rand(n, generator=gen))
        module.bias.copy_(0.2 * torch.randn(n, generator=gen))
        module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
        module.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def torch_pytorch_fid_features(model, images):
  """pytorch-fid's preprocessing (per image: sizes differ) and forward (one batch)."""
  with torch.no_grad():
    batch = []
    for image in images:
      x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
      batch.append(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
    return model.pool3(2 * torch.cat(batch) - 1).numpy()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(torch model, the Flax variables imported from its state_dict file)."""
  torch.manual_seed(0)
  torch.set_num_threads(2)
  model = TorchFidInception().eval()
  randomize(model, seed=1)
  path = tmp_path_factory.mktemp("inception") / "pt_inception_random.pth"
  torch.save(model.state_dict(), path)
  return model, inception.load_inception(path)


def random_images(seed):
  rng = np.random.default_rng(seed)
  # Smaller and larger than 299, non-square: the resize is up- and downsampling.
  sizes = [(37, 53), (64, 64), (120, 91), (320, 307)]
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def photos(photos_dir, n=4, size=64):
  out = []
  for path in sorted(photos_dir.iterdir())[:n]:
    with Image.open(path) as im:
      out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)))
  return out


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def torch_resize(image, dtype):
  x = torch.from_numpy(image.astype(dtype) / 255.0).permute(2, 0, 1)[None]
  y = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
  return y[0].permute(1, 2, 0).numpy()


def test_preprocess_is_pytorch_fid_resize():
  for image in random_images(seed=2):
    got = fid.preprocess(image)
    assert got.shape == (299, 299, 3) and got.dtype == np.float32
    # The exact filter: torch's kernel in float64 ...
    np.testing.assert_allclose(got, torch_resize(image, np.float64), atol=1e-6)
    # ... and what pytorch-fid runs (float32: its sample positions are ~1e-4 px off at ~300 px).
    np.testing.assert_allclose(got, torch_resize(image, np.float32), atol=1e-4)
  # float input in [0, 1] is the same image as uint8 / 255
  np.testing.assert_allclose(fid.preprocess(image / 255.0), fid.preprocess(image), atol=1e-7)


def test_param_count_matches_torch_and_published_figure(reference):
  model, variables = reference
  torch_count = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("fc."))
  assert inception.num_params() == torch_count == FID_INCEPTION_PARAMS == 21_785_568
  flax_count = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
  assert flax_count == FID_INCEPTION_PARAMS


def test_width_divides_every_channel_count_of_the_reference_layout():
  """A width-1/16 InceptionV3 (tiny random test backbones): every InceptionV3 channel count is a
  multiple of 16, so each conv of the torch layout has exactly 1/16 of its inputs and outputs."""
  from colorjax.models import semantic  # pylint: disable=g-import-not-at-top
  width = 1 / 16
  with torch.device("meta"):
    state = TorchFidInception(tf_pooling=False).state_dict()
  want = {key.removesuffix(".conv.weight"): (kh, kw, 3 if cin == 3 else cin // 16, cout // 16)
          for key, (cout, cin, kh, kw) in ((k, v.shape) for k, v in state.items()
                                           if k.endswith(".conv.weight"))}
  backbone = semantic.create_semantic_backbone("inception_v3", width)
  x = jax.ShapeDtypeStruct((2, inception.MIN_INPUT_SIZE, inception.MIN_INPUT_SIZE, 3), np.float32)
  (embedding, _), variables = jax.eval_shape(
      lambda x: backbone.init_with_output(jax.random.key(0), x, method="features"), x)
  got = {".".join(k.key for k in path[:-2]): leaf.shape
         for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
         if path[-1].key == "kernel"}
  assert got == want
  # Mixed_7c concatenates 320 + 2 x 384 + 2 x 384 + 192 channels.
  assert embedding.shape == (2, (320 + 4 * 384 + 192) // 16) == \
      (2, semantic.embedding_size("inception_v3", width))
  assert semantic.embedding_size("inception_v3") == inception.FEATURE_DIM == 2048


def test_pool3_features_match_pytorch(reference):
  model, variables = reference
  images = random_images(seed=3)
  want = torch_pytorch_fid_features(model, images)
  got = fid.pool3_features(variables, images, batch_size=BATCH)
  assert got.shape == (4, inception.FEATURE_DIM)
  assert np.abs(want).max() > 1e-2  # the random network did not collapse to zeros
  rel = np.abs(got - want).max() / np.abs(want).max()
  assert rel <= 1e-4, rel
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_weight_import_errors_name_the_keys(reference):
  model, _ = reference
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  # torchvision's extra heads and step counters are tolerated
  sd["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  inception.inception_variables_from_torch(sd)

  missing = dict(sd)
  del missing["Mixed_6c.branch7x7dbl_3.bn.running_var"]
  missing["Mixed_7c.branch_pool.conv.weight"] = np.zeros((192, 2048, 3, 3), np.float32)
  with pytest.raises(torch_weights.WeightFileError) as e:
    inception.inception_variables_from_torch(missing, source="inception.pth")
  message = str(e.value)
  assert "inception.pth" in message
  assert "Mixed_6c.branch7x7dbl_3.bn.running_var" in message
  assert "Mixed_7c.branch_pool.conv.weight: expected (192, 2048, 1, 1), found (192, 2048, 3, 3)" \
      in message

  with pytest.raises(torch_weights.WeightFileError, match="unexpected keys.*Mixed_8a.conv.weight"):
    inception.inception_variables_from_torch({**sd, "Mixed_8a.conv.weight": np.zeros(3)})


def test_fid_is_zero_for_a_set_with_itself_and_grows_with_a_color_shift(reference, photos_dir):
  _, variables = reference
  real = photos(photos_dir, n=3)

  def shifted(delta):
    # A warm cast: red up, blue down, as a colorizer's bias would look.
    offset = np.array([delta, 0, -delta], np.int16)
    return [np.clip(im.astype(np.int16) + offset, 0, 255).astype(np.uint8) for im in real]

  acc = fid.FidAccumulator(variables, names=("small_shift", "large_shift"), batch_size=BATCH)
  for im, small, large in zip(real, shifted(15), shifted(60)):
    acc.add(im, small_shift=small, large_shift=large)
  scores = acc.result()
  feats = acc.features()
  # The same images in other batches (other positions, other padding): the same features.
  again = fid.pool3_features(variables, real, BATCH)
  np.testing.assert_allclose(feats["real"], again, rtol=1e-5,
                             atol=1e-5 * np.abs(again).max())

  # The accumulator's scores are the FIDs of its features (the Frechet distance itself is
  # checked against metrics.frechet_distance below, on sets where that is cheap).
  assert scores["large_shift"] == fid.fid_from_features(feats["real"], feats["large_shift"])
  _, s1 = metrics.feature_statistics(feats["real"])
  scale = np.trace(s1)  # FID's natural unit for these features
  assert abs(fid.fid_from_features(feats["real"], again)) <= 1e-6 * scale
  assert 1e-3 * scale < scores["small_shift"] < scores["large_shift"]


def test_low_rank_route_equals_frechet_distance():
  """Tr sqrtm(S1 S2) = nuclear norm of A B^T holds for any set sizes: check it where the D x D
  route is accurate (full-rank covariances), and near it on rank-deficient ones."""
  rng = np.random.default_rng(4)
  mix = rng.normal(size=(64, 64))
  for n, m, rel in ((80, 100, 1e-9), (300, 70, 1e-9), (5, 9, 1e-6), (40, 30, 1e-6)):
    x = rng.normal(size=(n, 64)) @ mix
    y = rng.normal(size=(m, 64)) @ mix * 1.3 + 0.5
    want = metrics.frechet_distance(*metrics.feature_statistics(x), *metrics.feature_statistics(y))
    assert fid._low_rank_frechet_distance(x, y) == pytest.approx(want, rel=rel)
    assert fid.fid_from_features(x, y) == pytest.approx(want, rel=rel)


def test_fid_and_accumulator_reject_bad_input(reference):
  _, variables = reference
  with pytest.raises(ValueError, match="at least 2 images"):
    fid.fid([np.zeros((8, 8, 3), np.uint8)], [np.zeros((8, 8, 3), np.uint8)] * 2, variables,
            batch_size=BATCH)
  acc = fid.FidAccumulator(variables, names=("model", "gray"), batch_size=BATCH)
  with pytest.raises(ValueError, match="expected images for"):
    acc.add(np.zeros((8, 8, 3), np.uint8), model=np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
    fid.preprocess(np.zeros((8, 8), np.uint8))


def test_torchvision_inception_backbone_matches_torch_on_bundled_photos(photos_dir, tmp_path):
  """The semantic backbone of report 001's model 3: torchvision's pooling, same keys."""
  from colorjax.models import semantic  # pylint: disable=g-import-not-at-top
  torch.manual_seed(2)
  model = TorchFidInception(tf_pooling=False).eval()
  randomize(model, seed=3)
  path = tmp_path / "inception_v3.pth"
  torch.save(model.state_dict(), path)
  rgb = np.stack(photos(photos_dir, n=2, size=96)).astype(np.float32) / 255.0
  with torch.no_grad():
    want = model.pool3(2 * torch.from_numpy(rgb).permute(0, 3, 1, 2) - 1).numpy()
  variables = semantic.semantic_backbone_variables("inception_v3", path)
  backbone = semantic.create_semantic_backbone("inception_v3")
  got, _ = jax.jit(lambda v, x: backbone.apply(v, x, method="features"))(variables, rgb)
  assert got.shape == (2, 2048) and semantic.embedding_size("inception_v3") == 2048
  scale = np.abs(want).max()
  assert scale > 1e-2
  assert np.abs(np.asarray(got) - want).max() <= 1e-4 * scale
