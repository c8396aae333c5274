"""Tests of the colorize pipeline: one image, files and folders, odd inputs, the CLI entry."""
import functools
import pathlib
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from skimage import color as skcolor

from colorjax import checkpoint
from colorjax import color
from colorjax import colorization
from colorjax import config as config_lib
from colorjax import inference
from colorjax import models

SIZE = 32  # the tiny model's input side
FEW_PHOTOS = ("astronaut.jpg", "chelsea.jpg", "grace_hopper.jpg", "data_board.jpg")


def _tiny_config() -> dict:
  config = config_lib.base_config().to_dict()
  config["model"]["width"] = 1 / 16
  config["data"]["eval_size"] = SIZE
  return config


@pytest.fixture(scope="module")
def tiny_model():
  """(config, variables) of a random-init ECCV16 at width 1/16."""
  config = _tiny_config()
  generator = models.create_generator(config["model"], SIZE)
  # Jitted and with the rbg generator: initialising op by op with threefry compiles for minutes.
  init = jax.jit(functools.partial(generator.init, train=False))
  variables = init(jax.random.key(0, impl="unsafe_rbg"), jnp.zeros((1, SIZE, SIZE, 1)))
  return config, variables


@pytest.fixture(scope="module")
def colorizer(tiny_model):
  return inference.Colorizer(*tiny_model)


class FixedAB:
  """A stand-in model: returns one ab map for every image and records the L it was given."""

  def __init__(self, ab_hw2, size=SIZE):
    self.ab_hw2 = np.asarray(ab_hw2, np.float32)
    self.size = size
    self.inputs = []

  def __call__(self, l_BHW1):
    self.inputs.append(np.array(l_BHW1))
    return np.broadcast_to(self.ab_hw2, (l_BHW1.shape[0],) + self.ab_hw2.shape).copy()


def _lab(rgb_u8):
  return skcolor.rgb2lab(np.asarray(rgb_u8))


def _assert_same_lightness(result, original, name):
  """The output's L is the input's, up to 8-bit rounding, wherever Lab -> RGB did not clip.

  A predicted ab outside the sRGB gamut at a pixel's L is clipped to the gamut in RGB, which moves
  L there (as in the release); such pixels have a channel at 0 or 255.
  """
  result = np.asarray(result)
  l_error = np.abs(_lab(result)[..., 0] - _lab(original)[..., 0])
  unclipped = np.all((result > 0) & (result < 255), axis=-1)
  assert np.percentile(l_error[unclipped], 99) < 1.0, name
  assert l_error[unclipped].max() < 2.0, name
  return unclipped


def _save(array_or_image, path, **kwargs):
  image = (array_or_image if isinstance(array_or_image, Image.Image)
           else Image.fromarray(array_or_image))
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, **kwargs)
  return path


def _photo_tree(photos_dir, root: pathlib.Path) -> list[pathlib.Path]:
  """A folder with photos at two levels: root/a.jpg, root/sub/b.jpg ..."""
  sources = []
  for i, name in enumerate(FEW_PHOTOS):
    dst = root / ("sub" if i % 2 else "") / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(photos_dir / name, dst)
    sources.append(dst)
  return sources


# ------------------------------------------------------------------------------------------------
# Folders
# ------------------------------------------------------------------------------------------------


def test_folder_is_mirrored_at_input_sizes_with_input_lightness(photos_dir, tmp_path, colorizer):
  sources = _photo_tree(photos_dir, tmp_path / "in")
  report = colorization.colorize_paths([tmp_path / "in"], tmp_path / "out", colorizer,
                                   batch_size=3, progress=False)
  assert report.failed == []
  expected = sorted((tmp_path / "out" / s.relative_to(tmp_path / "in")).with_suffix(".png")
                    for s in sources)
  assert sorted(report.written) == expected
  assert sorted((tmp_path / "out").rglob("*.*")) == expected  # nothing else (no partial files)
  for src in sources:
    out = (tmp_path / "out" / src.relative_to(tmp_path / "in")).with_suffix(".png")
    with Image.open(src) as original, Image.open(out) as result:
      assert result.format == "PNG" and result.mode == "RGB"
      assert result.size == original.size
      unclipped = _assert_same_lightness(result, original, src.name)
      assert unclipped.mean() > 0.5, src.name
  assert report.images_per_second > 0


def test_real_model_output_has_chroma_from_the_model(photos_dir, colorizer):
  """The random model's ab reaches the output: it is the model's ab, upsampled, not the input's."""
  rgb = np.asarray(Image.open(photos_dir / "astronaut.jpg"))
  out = colorization.colorize(rgb, colorizer)
  l_SS1 = colorization.model_input_l(rgb, SIZE)
  ab_hw2 = colorizer(l_SS1[None])[0]
  assert ab_hw2.shape == (SIZE // 4, SIZE // 4, 2)
  ab_out = _lab(out)[..., 1:]
  # Where the prediction is in gamut, the output's mean ab is the prediction's mean ab.
  np.testing.assert_allclose(ab_out.mean(axis=(0, 1)), ab_hw2.mean(axis=(0, 1)), atol=1.5)


def test_folder_pngs_equal_the_straightforward_per_image_path(photos_dir, tmp_path, colorizer):
  """The batched, threaded, strip-wise pipeline (L by look-up, cache-sized strips) writes the same
  pixels as colorizing each photo alone with the whole-image conversions of `colorjax.color`."""
  sources = _photo_tree(photos_dir, tmp_path / "in")  # 4 photos of different sizes
  rng = np.random.default_rng(0)

  def one_at_a_time(l_BHW1):
    # XLA's float results may depend on the batch size in the last bit; this compares the host
    # side, so the model sees each photo alone in both pipelines.
    return np.concatenate([colorizer(l_BHW1[i:i + 1]) for i in range(len(l_BHW1))])

  one_at_a_time.size = SIZE
  models_ = {"random_eccv16": one_at_a_time,
             "saturated_ab": FixedAB(rng.uniform(-90, 90, (8, 8, 2)))}  # much out of gamut
  for name, model in models_.items():
    colorization.colorize_paths([tmp_path / "in"], tmp_path / name, model, batch_size=3,
                                progress=False)
    for src in sources:
      rgb = np.asarray(Image.open(src).convert("RGB"))
      small = np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.BICUBIC))
      ab_hw2 = model(color.rgb_to_lab(small)[None, ..., :1])[0]
      expected = color.colorize_with_ab(rgb, ab_hw2)
      out = (tmp_path / name / src.relative_to(tmp_path / "in")).with_suffix(".png")
      with Image.open(out) as result:
        np.testing.assert_array_equal(np.asarray(result), expected, err_msg=f"{name} {src.name}")


def test_folder_pngs_match_the_release_recipe_in_skimage_and_torch(photos_dir, tmp_path,
                                                                  colorizer):
  """What the folder pipeline writes, against the release demo's recipe computed independently:
  L of the bicubic-resized photo (scikit-image, float64) -> the model -> ab upsampled by torch's
  bilinear interpolate -> joined with the original's L -> scikit-image's Lab -> RGB, rounded.
  float64 vs float32 may move a rounding by one level, nothing more."""
  torch = pytest.importorskip("torch")
  sources = _photo_tree(photos_dir, tmp_path / "in")
  chroma_8x8x1 = np.random.default_rng(0).uniform(-80, 80, (8, 8, 1)).astype(np.float32)

  def vivid(l_BHW1):
    # Strong chroma that varies with the photo's L and from cell to cell (the random ECCV16's is
    # faint and smooth): a wrong upsampling or L shows.
    l_Bhw1 = l_BHW1[:, 2::4, 2::4]
    return np.concatenate([1.5 * (l_Bhw1 - 50.0), chroma_8x8x1 + 0 * l_Bhw1], axis=-1)

  vivid.size = SIZE
  for name, model in {"random_eccv16": colorizer, "vivid": vivid}.items():
    colorization.colorize_paths([tmp_path / "in"], tmp_path / name, model, batch_size=3,
                                progress=False)
    for src in sources:
      rgb = np.asarray(Image.open(src).convert("RGB"))
      height, width = rgb.shape[:2]
      small = Image.fromarray(rgb).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
      ab_1hw2 = np.array(model(_lab(small)[None, ..., :1].astype(np.float32)))
      ab_full = torch.nn.functional.interpolate(
          torch.from_numpy(ab_1hw2).permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
          align_corners=False)[0].permute(1, 2, 0).numpy()
      lab = np.concatenate([_lab(rgb)[..., :1], ab_full], axis=-1)
      with warnings.catch_warnings():  # "Z < 0 in N pixels": clipped to 0, as colorjax does
        warnings.simplefilter("ignore")
        expected = np.round(skcolor.lab2rgb(lab) * 255.0).astype(int)
      out = (tmp_path / name / src.relative_to(tmp_path / "in")).with_suffix(".png")
      with Image.open(out) as written:
        difference = np.abs(np.asarray(written).astype(int) - expected)
      assert difference.max() <= 1, f"{name} {src.name}"
      assert (difference > 0).mean() < 0.01, f"{name} {src.name}"
      assert np.abs(ab_full).mean() > 1.0, f"{name} {src.name}"  # colour, not the input's gray


class FixedRGB:
  """A stand-in model that predicts RGB: one RGB map in [0, 1] for every image."""
  output = "rgb"

  def __init__(self, rgb_hw3, size=SIZE):
    self.rgb_hw3 = np.asarray(rgb_hw3, np.float32)
    self.size = size

  def predict_rgb(self, l_BHW1):
    return np.broadcast_to(self.rgb_hw3, (l_BHW1.shape[0],) + self.rgb_hw3.shape).copy()

  def __call__(self, l_BHW1):
    raise AssertionError("an RGB model's picture is used, not its ab")


def test_rgb_model_output_is_its_upsampled_rgb_not_joined_with_the_input_lightness(
    photos_dir, tmp_path):
  torch = pytest.importorskip("torch")
  src = _photo_tree(photos_dir, tmp_path / "in")[:2]
  rgb_hw3 = np.random.default_rng(1).uniform(0, 1, (5, 4, 3)).astype(np.float32)
  report = colorization.colorize_paths(src, tmp_path / "out", FixedRGB(rgb_hw3), progress=False)
  assert report.failed == []
  for path, out in zip(src, report.written):
    with Image.open(path) as original, Image.open(out) as result:
      height, width = original.height, original.width
      got = np.asarray(result)
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(rgb_hw3).permute(2, 0, 1)[None], size=(height, width), mode="bilinear",
        align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, np.round(upsampled * 255), atol=1)
  # One image in a notebook gives the same picture.
  single = colorization.colorize(src[0], FixedRGB(rgb_hw3))
  np.testing.assert_array_equal(single, np.asarray(Image.open(report.written[0])))


def test_progress_bar_on_stderr_only_when_asked(photos_dir, tmp_path, capsys):
  src = _photo_tree(photos_dir, tmp_path / "in")[:2]
  fake = FixedAB(np.zeros((8, 8, 2)))
  colorization.colorize_paths(src, tmp_path / "out", fake, progress=True)
  captured = capsys.readouterr()
  assert "2/2" in captured.err and captured.out == ""
  colorization.colorize_paths(src, tmp_path / "out2", fake, progress=False)
  captured = capsys.readouterr()
  assert captured.err == "" and captured.out == ""


def test_batches_mix_sizes_and_last_batch_is_padded(photos_dir, tmp_path):
  src = _photo_tree(photos_dir, tmp_path / "in")  # 4 photos of different sizes
  fake = FixedAB(np.zeros((8, 8, 2)))
  report = colorization.colorize_paths([tmp_path / "in"], tmp_path / "out", fake, batch_size=3,
                                   progress=False)
  assert len(report.written) == len(src)
  assert [x.shape for x in fake.inputs] == [(3, SIZE, SIZE, 1)] * 2  # one shape: one compile
  assert np.all(fake.inputs[1][1:] == 0)  # the padding


# ------------------------------------------------------------------------------------------------
# Odd inputs
# ------------------------------------------------------------------------------------------------


def _odd_inputs(folder: pathlib.Path, photos_dir) -> tuple[dict[str, np.ndarray], list[str]]:
  """Writes odd but valid images (name -> the RGB they stand for) and broken files (names)."""
  rng = np.random.default_rng(0)
  photo = np.asarray(Image.open(photos_dir / "chelsea.jpg"))[:48, :40]
  gray = np.asarray(Image.fromarray(photo).convert("L"))
  valid = {}
  _save(gray, folder / "gray.png")
  valid["gray.png"] = np.repeat(gray[..., None], 3, axis=-1)
  rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=-1)
  _save(rgba, folder / "rgba.png")
  valid["rgba.png"] = photo
  palette = Image.fromarray(photo).quantize(16)
  _save(palette, folder / "palette.png")
  valid["palette.png"] = np.asarray(palette.convert("RGB"))
  cmyk = Image.fromarray(photo).convert("CMYK")
  _save(cmyk, folder / "cmyk.jpg", quality=95)
  with Image.open(folder / "cmyk.jpg") as decoded:
    valid["cmyk.jpg"] = np.asarray(decoded.convert("RGB"))
  gray16 = (gray.astype(np.uint16) * 257)
  _save(Image.fromarray(gray16), folder / "gray16.png")
  with Image.open(folder / "gray16.png") as decoded:
    assert decoded.mode == "I;16"
  valid["gray16.png"] = valid["gray.png"]
  one = rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)
  _save(one, folder / "one_pixel.png")
  valid["one_pixel.png"] = one
  yy, xx = np.mgrid[0:3000, 0:4000].astype(np.float32)
  big = np.stack([xx / 4000 * 255, yy / 3000 * 255, np.full_like(xx, 128)], -1).astype(np.uint8)
  _save(big, folder / "big.jpg", quality=90)
  with Image.open(folder / "big.jpg") as decoded:
    valid["big.jpg"] = np.asarray(decoded)

  _save(photo, folder / "full.jpg", quality=90)
  data = (folder / "full.jpg").read_bytes()
  (folder / "full.jpg").unlink()
  (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
  (folder / "empty.png").write_bytes(b"")
  (folder / "not_an_image.jpg").write_text("hello")
  return valid, ["truncated.jpg", "empty.png", "not_an_image.jpg"]


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("odd")
  photos_dir = pathlib.Path(color.__file__).parent / "assets" / "photos"
  valid, broken = _odd_inputs(folder, photos_dir)
  return folder, valid, broken


def test_odd_inputs_are_written_and_bad_files_reported(odd_folder, tmp_path, colorizer):
  folder, valid, broken = odd_folder
  out_dir = tmp_path / "out"
  report = colorization.colorize_paths([folder], out_dir, colorizer, batch_size=4, progress=False)
  assert sorted(path.name for path, _ in report.failed) == sorted(broken)
  for path, message in report.failed:
    assert path.name in message
  expected = sorted(out_dir / pathlib.Path(n).with_suffix(".png") for n in valid)
  assert sorted(report.written) == expected
  assert sorted(out_dir.iterdir()) == expected
  for name, rgb in valid.items():
    with Image.open(out_dir / pathlib.Path(name).with_suffix(".png")) as result:
      assert result.size == (rgb.shape[1], rgb.shape[0]), name
      step = max(1, max(rgb.shape) // 400)  # the check, not the pipeline, on a subsample
      _assert_same_lightness(np.asarray(result)[::step, ::step], rgb[::step, ::step], name)


def test_run_returns_status_and_prints_summary(photos_dir, tmp_path, tiny_model, capsys):
  checkpoint.save_model(tmp_path / "model", tiny_model[0], tiny_model[1])
  good = _photo_tree(photos_dir, tmp_path / "in")[:2]
  status = colorization.run(good, tmp_path / "out", checkpoint=tmp_path / "model", progress=False)
  assert status == 0
  captured = capsys.readouterr()
  assert "written 2, failed 0" in captured.out and "images/s" in captured.out

  (tmp_path / "in" / "broken.jpg").write_bytes(good[0].read_bytes()[:300])
  status = colorization.run([tmp_path / "in"], tmp_path / "out", checkpoint=tmp_path / "model",
                        batch_size=2, progress=False)
  assert status == 1
  captured = capsys.readouterr()
  assert f"written {len(FEW_PHOTOS)}, failed 1" in captured.out
  assert "broken.jpg" in captured.err


def test_run_needs_exactly_one_model(tmp_path):
  with pytest.raises(ValueError, match="exactly one model"):
    colorization.run([tmp_path], tmp_path / "out")
  with pytest.raises(ValueError, match="not both"):
    colorization.run([tmp_path], tmp_path / "out", checkpoint=tmp_path / "a", weights=tmp_path / "b")
  with pytest.raises(ValueError, match="step="):
    colorization.run([tmp_path], tmp_path / "out", weights=tmp_path / "b", step=3)


def test_missing_input_path_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    colorization.colorize_paths([tmp_path / "nowhere"], tmp_path / "out", FixedAB(np.zeros((8, 8, 2))))


def test_unwritable_output_is_reported_and_others_written(photos_dir, tmp_path):
  src = _photo_tree(photos_dir, tmp_path / "in")[:2]
  out_dir = tmp_path / "out"
  (out_dir / src[0].with_suffix(".png").name).mkdir(parents=True)  # a folder where a file goes
  report = colorization.colorize_paths(src, out_dir, FixedAB(np.zeros((8, 8, 2))), progress=False)
  assert report.written == [out_dir / src[1].with_suffix(".png").name]
  assert [path for path, _ in report.failed] == [src[0]]


# ------------------------------------------------------------------------------------------------
# Output names
# ------------------------------------------------------------------------------------------------


def test_output_names_never_clash(tmp_path):
  rels = [pathlib.Path(p) for p in
          ("a.jpg", "a.png", "b.jpg", "sub/a.jpg", "x.jpg", "x.jpg", "C.JPG", "c.png", "a.jpg.png")]
  outs = colorization.output_paths(rels, tmp_path)
  assert [o.relative_to(tmp_path).as_posix() for o in outs] == [
      "a.jpg.png", "a.png.png", "b.png", "sub/a.png", "x.jpg.png", "x.jpg.2.png",
      "C.JPG.png", "c.png.png", "a.jpg.2.png"]
  assert len({o.as_posix().lower() for o in outs}) == len(outs)


def test_same_stem_files_both_written(photos_dir, tmp_path):
  photo = np.asarray(Image.open(photos_dir / "coffee.jpg"))
  _save(photo, tmp_path / "in" / "a.jpg")
  _save(photo[:, ::-1], tmp_path / "in" / "a.png")
  report = colorization.colorize_paths([tmp_path / "in"], tmp_path / "out",
                                   FixedAB(np.zeros((8, 8, 2))), progress=False)
  assert [p.name for p in report.written] == ["a.jpg.png", "a.png.png"]
  first, second = (np.asarray(Image.open(p)) for p in report.written)
  assert not np.array_equal(first, second)


# ------------------------------------------------------------------------------------------------
# One image
# ------------------------------------------------------------------------------------------------


def test_zero_ab_gives_the_input_gray(photos_dir):
  photo = np.asarray(Image.open(photos_dir / "data_fruits.jpg"))
  zero = FixedAB(np.zeros((8, 8, 2)))
  gray = np.asarray(Image.fromarray(photo).convert("L"))
  out = colorization.colorize(gray, zero)
  assert out.shape == gray.shape + (3,) and out.dtype == np.uint8
  np.testing.assert_allclose(out, np.repeat(gray[..., None], 3, -1), atol=1)

  out = colorization.colorize(photo, zero)
  lab = _lab(photo)
  lab[..., 1:] = 0
  expected = np.round(skcolor.lab2rgb(lab) * 255)
  np.testing.assert_allclose(out, expected, atol=1)
  assert np.abs(out.astype(int) - out[..., :1]).max() <= 1  # R = G = B


def test_model_sees_bicubic_resized_l_and_its_ab_is_upsampled(photos_dir):
  photo = np.asarray(Image.open(photos_dir / "citrus-fruits.jpg"))
  constant = FixedAB(np.broadcast_to(np.float32([20.0, -30.0]), (8, 8, 2)))
  out = colorization.colorize(photo, constant, size=SIZE)
  resized = Image.fromarray(photo).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
  np.testing.assert_allclose(constant.inputs[0][0, ..., 0], _lab(resized)[..., 0], atol=1e-3)
  lab_out = _lab(out)
  mid = (lab_out[..., 0] > 30) & (lab_out[..., 0] < 70)  # where (20, -30) is in gamut
  assert mid.mean() > 0.3
  np.testing.assert_allclose(np.median(lab_out[mid][:, 1:], axis=0), [20.0, -30.0], atol=1.0)


def test_numpy_pil_and_path_inputs_agree(photos_dir, tmp_path, colorizer):
  path = photos_dir / "coffee.jpg"
  from_path = colorization.colorize(path, colorizer)
  from_str = colorization.colorize(str(path), colorizer)
  with Image.open(path) as image:
    from_pil = colorization.colorize(image, colorizer)
    rgb = np.asarray(image)
  from_uint8 = colorization.colorize(rgb, colorizer)
  from_float = colorization.colorize(rgb.astype(np.float32) / 255.0, colorizer)
  assert from_path.shape == rgb.shape and from_path.dtype == np.uint8
  for other in (from_str, from_pil, from_uint8):
    np.testing.assert_array_equal(other, from_path)
  np.testing.assert_allclose(from_float, from_path, atol=1)

  gray = np.asarray(Image.fromarray(rgb).convert("L"))
  _save(gray, tmp_path / "gray.png")
  from_gray_file = colorization.colorize(tmp_path / "gray.png", colorizer)
  np.testing.assert_array_equal(colorization.colorize(gray, colorizer), from_gray_file)
  np.testing.assert_array_equal(colorization.colorize(gray[..., None], colorizer), from_gray_file)
  np.testing.assert_array_equal(colorization.colorize(Image.fromarray(gray), colorizer), from_gray_file)

  alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
  rgba = np.concatenate([rgb, alpha], axis=-1)
  _save(rgba, tmp_path / "rgba.png")
  np.testing.assert_array_equal(colorization.colorize(rgba, colorizer),
                                colorization.colorize(tmp_path / "rgba.png", colorizer))


def test_strip_join_equals_colorize_with_ab(photos_dir):
  photo = np.asarray(Image.open(photos_dir / "data_butterfly.jpg"))
  ab_hw2 = np.random.default_rng(0).uniform(-60, 60, (9, 7, 2)).astype(np.float32)
  expected = color.colorize_with_ab(photo, ab_hw2)
  for strip_pixels in (1, 1000, photo.shape[0] * photo.shape[1]):
    np.testing.assert_array_equal(colorization.join_full_resolution(photo, ab_hw2, strip_pixels),
                                  expected)


def test_bad_arrays_are_rejected_clearly():
  fake = FixedAB(np.zeros((8, 8, 2)))
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    colorization.colorize(np.full((4, 4, 3), 2.0), fake)
  with pytest.raises(ValueError, match="shape"):
    colorization.colorize(np.zeros((4, 4, 2), np.uint8), fake)
  with pytest.raises(ValueError, match="dtype"):
    colorization.colorize(np.zeros((4, 4, 3), np.int64), fake)
  with pytest.raises(TypeError):
    colorization.colorize([[0, 1]], fake)
  with pytest.raises(ValueError, match="size"):
    colorization.colorize(np.zeros((4, 4, 3), np.uint8), lambda l: l, size=None)
