"""Tests for colorjax.images: finding files and decoding every odd image to 8-bit sRGB."""
import io

import numpy as np
import pytest
from PIL import Image, ImageCms
from skimage import color as skcolor

from colorjax import images


def _png_bytes(img: Image.Image, **save_kwargs) -> bytes:
  buffer = io.BytesIO()
  img.save(buffer, format="PNG", **save_kwargs)
  return buffer.getvalue()


def _random_uint8(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# list_images
# ------------------------------------------------------------------------------------------------


def test_list_images_recursive_sorted_relative_case_insensitive(tmp_path):
  root = tmp_path / "photos"
  for relative in ["b.JPG", "a/z.png", "a/y.Jpeg", "c/d/e.webp", "c/notes.txt", ".hidden.jpg",
                   "a/._x.jpg", "f.tiff", "g.PGM"]:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_bytes(b"x")
  single = tmp_path / "single.bmp"
  single.write_bytes(b"x")

  listed = images.list_images([root, str(single)])

  relatives = [rel.as_posix() for _, rel in listed]
  assert relatives == ["a/y.Jpeg", "a/z.png", "b.JPG", "c/d/e.webp", "f.tiff", "g.PGM",
                       "single.bmp"]
  for absolute, relative in listed[:-1]:
    assert absolute.is_absolute()
    assert absolute == (root / relative).resolve()
  assert listed[-1][0] == single.resolve()


def test_list_images_missing_path_names_it(tmp_path):
  missing = tmp_path / "nope"
  with pytest.raises(FileNotFoundError, match="nope"):
    images.list_images([missing])


def test_list_images_bundled_photos(photos_dir):
  listed = images.list_images([photos_dir])
  assert len(listed) == len(list(photos_dir.glob("*.jpg")))


# ------------------------------------------------------------------------------------------------
# decode_rgb: every mode, against a direct computation
# ------------------------------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly():
  rgb = _random_uint8((5, 7, 3))
  out = images.decode_rgb(_png_bytes(Image.fromarray(rgb)), "rgb.png")
  assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
  np.testing.assert_array_equal(out, rgb)


def test_gray_l_is_replicated():
  gray = _random_uint8((4, 6))
  out = images.decode_rgb(_png_bytes(Image.fromarray(gray, mode="L")), "gray.png")
  np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=-1))


def test_bilevel_mode_1():
  bits = np.random.default_rng(1).random((5, 9)) > 0.5
  img = Image.fromarray(bits.astype(np.uint8) * 255, mode="L").convert("1")
  out = images.decode_rgb(_png_bytes(img), "bits.png")
  np.testing.assert_array_equal(out, np.stack([bits * 255] * 3, axis=-1).astype(np.uint8))


def test_rgba_composited_over_white():
  rgba = _random_uint8((6, 5, 4), seed=2)
  rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
  out = images.decode_rgb(_png_bytes(Image.fromarray(rgba, mode="RGBA")), "alpha.png")
  alpha = rgba[..., 3:].astype(np.float64) / 255.0
  expected = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(out[0, 1], rgba[0, 1, :3])


def test_gray_with_alpha_la_composited_over_white():
  la = _random_uint8((3, 4, 2), seed=3)
  out = images.decode_rgb(_png_bytes(Image.fromarray(la, mode="LA")), "la.png")
  alpha = la[..., 1].astype(np.float64) / 255.0
  expected = np.round(la[..., 0] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
  np.testing.assert_array_equal(out, np.stack([expected] * 3, axis=-1))


def test_palette_with_transparency():
  palette = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], np.uint8)
  indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
  img = Image.fromarray(indices, mode="P")
  img.putpalette(palette.reshape(-1).tolist())
  data = _png_bytes(img, transparency=1)  # palette entry 1 is fully transparent
  assert Image.open(io.BytesIO(data)).mode == "P"

  out = images.decode_rgb(data, "palette.png")

  expected = palette[indices].copy()
  expected[indices == 1] = 255
  np.testing.assert_array_equal(out, expected)


def test_palette_gif_without_transparency():
  palette = np.array([[0, 0, 0], [200, 100, 50]], np.uint8)
  indices = np.array([[0, 1], [1, 1]], np.uint8)
  img = Image.fromarray(indices, mode="P")
  img.putpalette(palette.reshape(-1).tolist())
  buffer = io.BytesIO()
  img.save(buffer, format="GIF")
  np.testing.assert_array_equal(images.decode_rgb(buffer.getvalue(), "p.gif"), palette[indices])


def test_cmyk_jpeg_matches_the_cmyk_formula():
  rng = np.random.default_rng(4)
  cmyk = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), 8, 0), 8, 1)
  buffer = io.BytesIO()
  Image.fromarray(cmyk, mode="CMYK").save(buffer, format="JPEG", quality=100)
  data = buffer.getvalue()
  stored = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)  # the decoded CMYK samples
  assert stored.shape[-1] == 4

  out = images.decode_rgb(data, "cmyk.jpg")

  # R = (255 - C)(255 - K) / 255, and likewise for G (M) and B (Y).
  expected = (255.0 - stored[..., :3]) * (255.0 - stored[..., 3:]) / 255.0
  assert np.abs(out.astype(np.float64) - expected).max() <= 1.0
  original = (255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:].astype(np.float64)) / 255.0
  assert np.abs(out.astype(np.float64) - original).mean() < 4.0  # not inverted: JPEG loss only


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_sixteen_bit_gray_scaled_by_full_range(mode, tmp_path):
  values = np.array([[0, 255, 256, 1000], [32768, 40000, 65000, 65535]], np.uint16)
  img = Image.fromarray(values)  # uint16 -> mode I;16
  if mode == "I;16B":
    path = tmp_path / "big.tif"
    Image.frombytes("I;16B", img.size, values.astype(">u2").tobytes()).save(path)
    data = path.read_bytes()
  else:
    data = _png_bytes(img)
  assert np.asarray(Image.open(io.BytesIO(data))).max() == 65535  # really 16-bit on disk

  out = images.decode_rgb(data, "deep.png")

  expected = np.round(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
  np.testing.assert_array_equal(out, np.stack([expected] * 3, axis=-1))
  assert out[0, 2, 0] == 1 and out[1, 0, 0] == 128  # 256 -> 1 and 32768 -> 128: not clipped


def test_float_mode_f_in_unit_range(tmp_path):
  values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
  path = tmp_path / "float.tif"
  Image.fromarray(values, mode="F").save(path)
  out = images.load_rgb(path)
  np.testing.assert_array_equal(out[..., 0], np.round(values * 255).astype(np.uint8))


def test_one_by_one_image():
  out = images.decode_rgb(_png_bytes(Image.new("RGB", (1, 1), (12, 34, 56))), "dot.png")
  assert out.shape == (1, 1, 3)
  np.testing.assert_array_equal(out[0, 0], [12, 34, 56])


def test_exif_orientation_is_applied():
  rgb = _random_uint8((2, 3, 3), seed=5)
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 CW to display"
  out = images.decode_rgb(_png_bytes(Image.fromarray(rgb), exif=exif.tobytes()), "rot.png")
  np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))


def test_srgb_icc_profile_leaves_pixels_unchanged():
  rgb = _random_uint8((4, 4, 3), seed=6)
  profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
  out = images.decode_rgb(_png_bytes(Image.fromarray(rgb), icc_profile=profile), "srgb.png")
  np.testing.assert_array_equal(out, rgb)


def test_jpeg_draft_keeps_short_side_at_least_min_side(photos_dir):
  path = photos_dir / "chelsea.jpg"
  full = images.load_rgb(path)
  reduced = images.load_rgb(path, min_side=100)
  assert min(reduced.shape[:2]) >= 100
  assert reduced.shape[0] < full.shape[0]
  # DCT scaling is a downscale of the same picture, not a different image.
  small_full = np.asarray(Image.fromarray(full).resize(reduced.shape[1::-1], Image.BOX))
  assert np.abs(small_full.astype(int) - reduced.astype(int)).mean() < 6


# ------------------------------------------------------------------------------------------------
# Unreadable files
# ------------------------------------------------------------------------------------------------


def _truncated_jpeg(photos_dir) -> bytes:
  data = (photos_dir / "coffee.jpg").read_bytes()
  return data[: len(data) // 3]


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "missing"])
def test_unreadable_files_raise_image_read_error_naming_the_file(kind, tmp_path, photos_dir):
  path = tmp_path / f"bad_{kind}.jpg"
  if kind == "truncated":
    path.write_bytes(_truncated_jpeg(photos_dir))
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "text":
    path.write_text("this is not a picture\n")
  with pytest.raises(images.ImageReadError, match=f"bad_{kind}.jpg") as info:
    images.load_rgb(path)
  assert isinstance(info.value, ValueError)
  assert info.value.cause


def test_error_causes_are_specific(photos_dir):
  with pytest.raises(images.ImageReadError, match="0 bytes"):
    images.decode_rgb(b"", "e.jpg")
  with pytest.raises(images.ImageReadError, match="truncated"):
    images.decode_rgb(_truncated_jpeg(photos_dir), "t.jpg")
  with pytest.raises(images.ImageReadError, match="not an image"):
    images.decode_rgb(b"hello", "h.jpg")


# ------------------------------------------------------------------------------------------------
# chroma
# ------------------------------------------------------------------------------------------------


def test_chroma_matches_skimage_lab():
  rgb = _random_uint8((40, 50, 3), seed=7)  # small enough that nothing is subsampled
  lab = skcolor.rgb2lab(rgb)
  expected = np.mean(np.hypot(lab[..., 1], lab[..., 2]))
  assert images.chroma(rgb) == pytest.approx(expected, rel=1e-3)


def test_chroma_of_gray_is_zero_and_of_photos_is_not(photos_dir):
  gray = np.repeat(_random_uint8((300, 200, 1), seed=8), 3, axis=-1)
  assert images.chroma(gray) < 0.05
  assert images.chroma(images.load_rgb(photos_dir / "coffee.jpg")) > 5.0
