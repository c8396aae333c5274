"""`colorjax demo`: the app's logic without a browser, the command's errors, the page in Chromium.

The browser test drives Debian's Chromium headless through selenium and chromedriver, like the
report's (`apt-get install -y chromium chromium-driver`); it and the Gradio checks are skipped,
saying so, where those or the `demo` extra are not installed.
"""
import functools
import html as stdlib_html
import io
import os
import pathlib
import re
import socket
import time
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from skimage import color as skcolor

import conftest
from colorjax import checkpoint
from colorjax import cli
from colorjax import color
from colorjax import colorization
from colorjax import config as config_lib
from colorjax import demo
from colorjax import inference
from colorjax import models

SIZE = 32
PHOTO = "chelsea.jpg"  # 320 x 213: not square, so a swapped width and height would show


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  """An exported random-init ECCV16 at width 1/16 (313 bins), its (config, variables), its path."""
  return _exported_model(tmp_path_factory, "tiny", seed=0, width=1 / 16)


def _exported_model(tmp_path_factory, directory: str, seed: int, **model):
  """A random-init model of the base config with `model` overrides, exported; (config,
  variables, path)."""
  config = config_lib.base_config().to_dict()
  config["model"].update(model)
  config["data"]["eval_size"] = SIZE
  generator = models.create_generator(config["model"], SIZE)
  init = jax.jit(functools.partial(generator.init, train=False))
  variables = init(jax.random.key(seed, impl="unsafe_rbg"), jnp.zeros((1, SIZE, SIZE, 1)))
  if "conv8_313" in variables["params"]:
    # Random-init logits are nearly uniform, and so is every tempered distribution of them: the
    # colorizations at temperatures 0.38 and 0.28 can be the same PNG. A bias towards red bins
    # (a > 0) makes the annealed mean move with the temperature, as a trained model's does.
    params = dict(variables["params"])
    params["conv8_313"] = {**params["conv8_313"],
                           "bias": jnp.asarray(color.AB_BINS[:, 0] / 20.0, jnp.float32)}
    variables = {**variables, "params": params}
  path = tmp_path_factory.mktemp("model") / directory
  checkpoint.save_model(path, config, variables)
  return config, variables, path


@pytest.fixture(scope="module")
def app_logic(tiny_model):
  return demo.Demo.load(demo.model_sources([str(tiny_model[2])]))


def _photo(photos_dir, name=PHOTO):
  return demo.read_photos([photos_dir / name])[0][0]


# ----------------------------------------------------------------------------------------------
# Models and photos
# ----------------------------------------------------------------------------------------------


def test_model_sources_default_to_a_quickstart_workdir_with_a_checkpoint(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(demo.NoModelError, match="colorjax train"):
    demo.model_sources()
  workdir = tmp_path / "workdir"
  (workdir / "checkpoints" / "2.orbax-checkpoint-tmp").mkdir(parents=True)
  (workdir / "config.json").write_text("{}")
  with pytest.raises(demo.NoModelError):  # an unfinished save is no checkpoint
    demo.model_sources()
  (workdir / "checkpoints" / "4").mkdir()
  assert demo.model_sources() == [demo.ModelSource("checkpoint", str(workdir))]
  given = demo.model_sources(["a", "b"], ["c.pth"])
  assert [(s.kind, s.label) for s in given] == [
      ("checkpoint", "a"), ("checkpoint", "b"), ("weights", "c.pth")]
  with pytest.raises(ValueError, match="given twice: a"):
    demo.model_sources(["a", "a"])


def test_read_photos_decodes_and_names_unreadable_files(photos_dir, tmp_path):
  gray_png = tmp_path / "gray.png"
  Image.open(photos_dir / PHOTO).convert("L").save(gray_png)
  (tmp_path / "notes.jpg").write_text("not a photo")
  (tmp_path / "empty.png").write_bytes(b"")
  (tmp_path / "cut.jpg").write_bytes((photos_dir / PHOTO).read_bytes()[:400])
  paths = [photos_dir / PHOTO, tmp_path / "notes.jpg", gray_png, tmp_path / "empty.png",
           tmp_path / "cut.jpg", tmp_path / "missing.png"]
  photos, errors = demo.read_photos(paths)
  assert [p.name for p in photos] == [PHOTO, "gray.png"]
  assert photos[0].rgb_HW3.shape == (213, 320, 3) and photos[0].rgb_HW3.dtype == np.uint8
  np.testing.assert_array_equal(photos[0].rgb_HW3, np.asarray(Image.open(photos_dir / PHOTO)))
  assert photos[0].is_color and not photos[1].is_color
  assert len(errors) == 4
  for name, error in zip(("notes.jpg", "empty.png", "cut.jpg", "missing.png"), errors):
    assert error.startswith(f"cannot read image {name}: "), error
    assert str(tmp_path) not in error  # the upload's name, not the server's temporary path
  assert "not an image file" in errors[0] and "empty" in errors[1]


def test_bundled_photos_are_listed_and_nothing_else_is_served(photos_dir):
  names = demo.bundled_photo_names()
  assert PHOTO in names and len(names) == len(list(photos_dir.glob("*.jpg")))
  assert demo.bundled_photo(PHOTO).rgb_HW3.shape == (213, 320, 3)
  for bad in ("../cli.py", "missing.jpg", str(photos_dir / PHOTO)):
    with pytest.raises(ValueError, match="no bundled photo"):
      demo.bundled_photo(bad)


def test_gray_view_is_the_photos_lightness(photos_dir):
  photo = _photo(photos_dir)
  lab_gray = skcolor.rgb2lab(photo.gray_HW3)
  np.testing.assert_allclose(lab_gray[..., 0], skcolor.rgb2lab(photo.rgb_HW3)[..., 0], atol=0.6)
  assert np.abs(lab_gray[..., 1:]).max() < 1.0
  assert np.ptp(photo.gray_HW3.astype(int), axis=-1).max() <= 1  # R = G = B but for rounding


# ----------------------------------------------------------------------------------------------
# Colorizing
# ----------------------------------------------------------------------------------------------


def test_colorize_matches_the_library_at_another_temperature(app_logic, tiny_model, photos_dir):
  temperature = 0.2
  photo = _photo(photos_dir)
  model = app_logic.model_names[0]
  got = app_logic.colorize(model, photo, SIZE, temperature)
  # The library's own path, with a model built at that temperature.
  reference = colorization.colorize(
      photo.rgb_HW3, inference.Colorizer(tiny_model[0], tiny_model[1], temperature))
  assert got.shape == reference.shape == photo.rgb_HW3.shape
  difference = np.abs(got.astype(int) - reference)
  assert difference.max() <= 1 and difference.mean() < 0.01


def test_temperature_decodes_kept_logits_without_running_the_network(app_logic, photos_dir,
                                                                     monkeypatch):
  photo = _photo(photos_dir, "coffee.jpg")
  model = app_logic.model_names[0]
  colorizer = app_logic.colorizer(model)
  calls = []
  run_network = colorizer.raw_output
  monkeypatch.setattr(colorizer, "raw_output", lambda l: calls.append(l.shape) or run_network(l))
  vivid = app_logic.colorize(model, photo, SIZE, 0.05)
  plain = app_logic.colorize(model, photo, SIZE, 1.0)
  assert calls == [(1, SIZE, SIZE, 1)]
  assert not np.array_equal(vivid, plain)
  app_logic.colorize(model, photo, 48, 1.0)  # another input size runs it again
  assert calls == [(1, SIZE, SIZE, 1), (1, 48, 48, 1)]


def test_kept_outputs_are_bounded(tiny_model, photos_dir):
  logic = demo.Demo({"m": inference.Colorizer(tiny_model[0], tiny_model[1])}, cache_bytes=1)
  for name in ("coffee.jpg", "rocket.jpg"):
    logic.colorize("m", _photo(photos_dir, name), SIZE, 0.38)
  assert len(logic._outputs) == 1  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def tiny_rgb_model(tmp_path_factory):
  """An exported random-init U-Net that predicts RGB (`model.output='rgb'`, seed 003's head)."""
  return _exported_model(tmp_path_factory, "tiny_rgb", seed=1, name="unet", output="rgb",
                         convention="pix2pix", ngf=4, num_downs=3, use_dropout=False)


def test_rgb_model_shows_its_own_rgb_as_colorize_does(tiny_rgb_model, photos_dir):
  logic = demo.Demo.load(demo.model_sources([str(tiny_rgb_model[2])]))
  model = logic.model_names[0]
  colorizer = logic.colorizer(model)
  assert not demo.uses_temperature(colorizer)
  photo = _photo(photos_dir)
  got = logic.colorize(model, photo, SIZE, 0.38)
  # `colorjax colorize`'s path: the model's RGB in [0, 1], upsampled bilinearly to the photo.
  reference = colorization.colorize(photo.rgb_HW3, inference.Colorizer(*tiny_rgb_model[:2]))
  np.testing.assert_array_equal(got, reference)
  assert got.shape == photo.rgb_HW3.shape
  # Independently: torch's bilinear upsampling (half-pixel centres) of the predicted RGB.
  torch = pytest.importorskip("torch")
  rgb_1hw3 = colorizer.predict_rgb(colorization.model_input_l(photo.rgb_HW3, SIZE)[None])
  upsampled = torch.nn.functional.interpolate(
      torch.from_numpy(np.array(rgb_1hw3)).permute(0, 3, 1, 2), size=photo.rgb_HW3.shape[:2],
      mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
  want = np.round(np.clip(upsampled, 0, 1) * 255)
  assert np.abs(got.astype(int) - want).max() <= 1
  # Not the ab of that RGB joined with the photo's L (the result of decoding it as ab): the
  # random model's lightness is its own.
  lab = skcolor.rgb2lab(got)
  assert np.abs(lab[..., 0] - skcolor.rgb2lab(photo.rgb_HW3)[..., 0]).mean() > 5
  # The temperature changes nothing, and the status does not mention it.
  np.testing.assert_array_equal(logic.colorize(model, photo, SIZE, 0.05), got)
  shown = logic.render([photo], 0, model, SIZE, 0.38)
  np.testing.assert_array_equal(shown.colorized, got)
  assert "temperature" not in shown.messages[-1]


def test_render_reports_instead_of_raising(app_logic, photos_dir):
  photo = _photo(photos_dir)
  gray = demo.Photo("gray.png", photo.gray_HW3)
  model = app_logic.model_names[0]
  shown = app_logic.render([photo, gray], 1, model, SIZE, 0.38, ["cannot read image x.txt: ..."])
  assert shown.colorized.shape == photo.rgb_HW3.shape
  assert shown.original is None  # the selected photo is gray
  assert [name for _, name in shown.results] == [PHOTO, "gray.png"]
  assert shown.messages[0] == "cannot read image x.txt: ..."
  assert "2 photos" in shown.messages[1] and "temperature 0.38" in shown.messages[1]
  shown = app_logic.render([photo], 5, model, SIZE, 0.38)  # a stale selection falls back
  np.testing.assert_array_equal(shown.original, photo.rgb_HW3)
  for bad in ({"size": 20}, {"size": 33.5}, {"temperature": 0.0}, {"temperature": float("nan")},
              {"model": "other"}):
    kwargs = {"model": model, "size": SIZE, "temperature": 0.38, **bad}
    shown = app_logic.render([photo], 0, kwargs["model"], kwargs["size"], kwargs["temperature"])
    assert shown.colorized is None and len(shown.messages) == 1
    assert shown.messages[0].startswith("cannot colorize with "), shown.messages
  assert app_logic.render([], 0, model, SIZE, 0.38).messages == [
      "Upload photos or pick a bundled one."]


def test_status_shows_messages_verbatim():
  markdown_it = pytest.importorskip("markdown_it")
  messages = ["cannot read image a_b_*c*.jpg: <x> [l](u) `k` #1 | ~y~ \\", "second"]
  html = markdown_it.MarkdownIt("commonmark").render(demo.status_markdown(messages))
  items = re.findall(r"<li>(.*?)</li>", html)
  assert [stdlib_html.unescape(item) for item in items] == messages


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def test_command_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(demo, "gradio_available", lambda: True)
  monkeypatch.chdir(tmp_path)
  assert cli.main(["demo"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "colorjax train" in err and "--checkpoint" in err


def test_command_without_gradio_says_how_to_install_it(monkeypatch, capsys):
  monkeypatch.setattr(demo, "gradio_available", lambda: False)
  assert cli.main(["demo", "--checkpoint", "anything"]) == 2
  err = capsys.readouterr().err
  assert err == f"colorjax demo: error: the demo needs Gradio: {demo.INSTALL_HINT}\n"


def test_command_with_a_bad_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(demo, "gradio_available", lambda: True)
  monkeypatch.chdir(tmp_path)
  assert cli.main(["demo", "--checkpoint", "nowhere"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and str(tmp_path / "nowhere") in err


# ----------------------------------------------------------------------------------------------
# The page in a real browser
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def browser():
  pytest.importorskip("gradio", reason=f"gradio missing; {conftest.CHROMIUM_HINT}")
  driver = conftest.chromium_driver("1400,1000", 60)
  yield driver
  driver.quit()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _fetch_png(url: str) -> np.ndarray:
  with urllib.request.urlopen(url, timeout=30) as response:
    return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


# Gradio 6.31's queue statistics use pandas options that pandas 3 deprecates.
@pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated",
                            "ignore:The copy keyword is deprecated")
def test_page_colorizes_an_upload_live_and_reports_a_bad_one(browser, app_logic, tiny_model,
                                                              photos_dir, tmp_path, monkeypatch,
                                                              capsys):
  # pylint: disable=g-import-not-at-top
  from selenium.common.exceptions import TimeoutException
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait
  # pylint: enable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  unreadable = tmp_path / "_notes_ [draft](x).jpg"  # Markdown's syntax, to be shown verbatim
  unreadable.write_text("not a photo")
  by = "css selector"
  model = app_logic.model_names[0]
  photo = _photo(photos_dir)

  def wait(condition, what, timeout=60):
    try:
      return WebDriverWait(browser, timeout, poll_frequency=0.2).until(lambda d: condition())
    except TimeoutException:
      page = browser.find_element(by, "body").text
      console = [entry["message"] for entry in browser.get_log("browser")]
      pytest.fail(f"timed out waiting for {what}; the page says: {page!r}; console: {console}")

  def status():
    return browser.find_element(by, "#status").text

  def colorized():
    """(src, natural width, natural height) of the shown colorization, or None."""
    return browser.execute_script(
        "const i = document.querySelector('#colorized img');"
        "return i && i.complete && i.naturalWidth ? [i.src, i.naturalWidth, i.naturalHeight] "
        ": null;")

  port = _free_port()
  with demo.serve(app_logic, port=port) as url:
    temp_dir = pathlib.Path(os.environ["GRADIO_TEMP_DIR"])
    browser.get(url)
    upload = wait(lambda: browser.find_elements(by, "#upload input[type=file]"), "the page")[0]
    upload.send_keys(str(photos_dir / PHOTO))
    src, width, height = wait(colorized, "the colorization")
    assert (width, height) == (320, 213)
    assert "temperature 0.38" in status() and PHOTO in status()
    np.testing.assert_array_equal(_fetch_png(src), app_logic.colorize(model, photo, SIZE, 0.38))
    assert browser.execute_script(
        "const i = document.querySelector('#original img'); return i && i.naturalWidth") == 320

    # Live temperature: ten steps left on the slider, 0.38 -> 0.28.
    browser.find_element(by, "#temperature input[type=range]").send_keys(*[Keys.ARROW_LEFT] * 10)
    wait(lambda: "temperature 0.28" in status(), "the new temperature")
    src_cold, width, height = wait(
        lambda: (c := colorized()) and c[0] != src and c, "the new colorization")
    assert (width, height) == (320, 213)
    np.testing.assert_array_equal(_fetch_png(src_cold),
                                  app_logic.colorize(model, photo, SIZE, 0.28))

    # An unreadable upload: a message, no image, and the server goes on.
    browser.find_element(by, "#upload button[aria-label='Clear']").click()
    wait(lambda: colorized() is None, "the cleared page")
    browser.find_element(by, "#upload input[type=file]").send_keys(str(unreadable))
    wait(lambda: f"cannot read image {unreadable.name}: not an image file" in status(),
         "the message")
    assert colorized() is None
    # Uploads went to the server's temporary directory only.
    assert any(p.name == unreadable.name for p in temp_dir.rglob("*"))
    assert os.listdir(tmp_path) == [unreadable.name]
    browser.find_element(by, "#upload button[aria-label='Clear']").click()
    browser.find_element(by, "#upload input[type=file]").send_keys(str(photos_dir / "rocket.jpg"))
    wait(lambda: "rocket.jpg" in status() and colorized(), "a colorization after the error")

    # A second server on the taken port: one line, no traceback.
    capsys.readouterr()
    assert demo.run([str(tiny_model[2])], port=port) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"colorjax demo: error: cannot serve on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1
  assert not temp_dir.exists()
