"""`colorjax demo`: colorize photos in the browser, a Gradio app over the library's inference.

  colorjax demo                                # the quickstart model in ./workdir
  colorjax demo --checkpoint runs/a --checkpoint runs/b --weights eccv16.pth --port 8000

Upload one or many photos (any file `colorjax colorize` reads) or pick a bundled one; the page
shows the gray input, the colorization and the original (for color uploads) side by side at the
photo's full resolution, and every result can be downloaded as a PNG. The controls are the model
(each `--checkpoint` / `--weights` given), the network input size and, for 313-bin (ECCV16-style)
models, the annealed-mean temperature, applied live: the network's logits are kept, so moving the
temperature only decodes them again.

The pipeline is `colorjax.colorization`'s (the model sees the photo resized to `size x size`; its ab
is upsampled and joined to the photo's own full-resolution L, or the RGB of a model that predicts
RGB, `model.output='rgb'`, is upsampled as it is). Gradio is an optional dependency
(`pip install 'colorjax[demo]'`), imported only when the server starts; uploads and the images it
serves live in a temporary directory that is removed when the server stops.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
import pathlib
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Iterator, Sequence

import numpy as np

from colorjax import colorization
from colorjax import images
from colorjax import inference
from colorjax import paths
from colorjax import workdir as workdir_lib
from colorjax.models import heads

_log = logging.getLogger(__name__)

DEFAULT_PORT = 7860
BUNDLED_PHOTOS_DIR = pathlib.Path(__file__).parent / "assets" / "photos"
INSTALL_HINT = "pip install 'colorjax[demo]'"
NO_MODEL_HINT = (f"no model: train the quickstart one with `colorjax train` (it writes "
                 f"./{workdir_lib.DEFAULT_WORKDIR}), or pass --checkpoint DIR or --weights "
                 "eccv16.pth")

MIN_SIZE, MAX_SIZE, SIZE_STEP = 32, 1024, 8
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1.0
# Mean Lab chroma from which an upload counts as a color photo whose original is worth showing
# (a gray photo stored as RGB JPEG scores well below 1; a faded sepia print several units).
COLOR_CHROMA = 1.0
# The network outputs kept for re-decoding (ECCV16 at 256 px: 64 x 64 x 313 float32, 5 MB each).
OUTPUT_CACHE_BYTES = 512 << 20
MAX_UPLOAD = "200mb"


class NoModelError(ValueError):
  """No model was given and the quickstart workdir holds no checkpoint."""


# ------------------------------------------------------------------------------------------------
# Models and photos (no Gradio here)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """A model given on the command line: a colorjax checkpoint or the official ECCV16 .pth."""
  kind: str  # "checkpoint" (a training workdir or an exported model) or "weights"
  path: str

  @property
  def label(self) -> str:
    return self.path


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  """Whether a training workdir holds a finished checkpoint (orbax names those by their step)."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    return False
  checkpoints = workdir / workdir_lib.CHECKPOINTS_SUBDIR
  return ((workdir / workdir_lib.CONFIG_FILE).is_file() and checkpoints.is_dir()
          and any(p.is_dir() and p.name.isdigit() for p in checkpoints.iterdir()))


def model_sources(checkpoints: Sequence[str] = (), weights: Sequence[str] = (),
                  default_workdir: str = workdir_lib.DEFAULT_WORKDIR) -> list[ModelSource]:
  """The models to offer, in command-line order; without any, the quickstart workdir's.

  Raises:
    NoModelError: none given and `default_workdir` holds no checkpoint (says how to get one).
  """
  sources = ([ModelSource("checkpoint", str(p)) for p in checkpoints]
             + [ModelSource("weights", str(p)) for p in weights])
  if not sources:
    if not has_checkpoint(default_workdir):
      raise NoModelError(NO_MODEL_HINT)
    sources = [ModelSource("checkpoint", paths.absolute(default_workdir))]
  labels = [s.label for s in sources]
  duplicates = sorted({label for label in labels if labels.count(label) > 1})
  if duplicates:
    raise ValueError(f"model given twice: {', '.join(duplicates)}")
  return sources


def load_colorizer(source: ModelSource):
  if source.kind == "weights":
    return inference.Colorizer.from_torch_eccv16(source.path)
  return inference.Colorizer.from_checkpoint(source.path)


def uses_temperature(colorizer) -> bool:
  """Whether the model decodes 313-bin logits, the only output the temperature changes."""
  return heads.decodes_with_temperature(colorizer.model_cfg)


@dataclasses.dataclass(eq=False)
class Photo:
  """A decoded photo: its name (the upload's file name) and uint8 sRGB pixels."""
  name: str
  rgb_HW3: np.ndarray

  @functools.cached_property
  def key(self) -> str:
    digest = hashlib.sha1(self.rgb_HW3.tobytes()).hexdigest()
    return f"{digest}-{self.rgb_HW3.shape[0]}x{self.rgb_HW3.shape[1]}"

  @functools.cached_property
  def is_color(self) -> bool:
    return images.chroma(self.rgb_HW3) >= COLOR_CHROMA

  @functools.cached_property
  def gray_HW3(self) -> np.ndarray:
    """What the model is given: the photo's own L with zero chroma (not Pillow's luma)."""
    return colorization.join_full_resolution(self.rgb_HW3, np.zeros((1, 1, 2), np.float32))


def read_photos(paths: Sequence[str | os.PathLike]) -> tuple[list[Photo], list[str]]:
  """Decodes uploaded files; unreadable ones give a message naming the file (its base name:
  an upload's full path is a server-side temporary one) instead of an error."""
  photos, errors = [], []
  for path in paths:
    name = pathlib.Path(path).name
    try:
      photos.append(Photo(name, images.decode_rgb(images.read_bytes(path), name)))
    except images.ImageReadError as e:
      errors.append(f"cannot read image {name}: {e.cause}")
    except Exception as e:  # pylint: disable=broad-except
      # MemoryError on a huge decode and the like: the message, never a dead server.
      errors.append(f"cannot read image {name}: {type(e).__name__}: {e}")
  return photos, errors


def bundled_photo_names() -> list[str]:
  return sorted(p.name for p in BUNDLED_PHOTOS_DIR.iterdir() if images.is_image_file(p))


def bundled_photo(name: str) -> Photo:
  if name not in bundled_photo_names():  # also refuses paths: only the listed files are served
    raise ValueError(f"no bundled photo {name!r}")
  return Photo(name, images.load_rgb(BUNDLED_PHOTOS_DIR / name))


def check_size(size) -> int:
  if size is None or int(size) != size or not MIN_SIZE <= size <= MAX_SIZE:
    raise ValueError(f"the input size must be an integer from {MIN_SIZE} to {MAX_SIZE}, "
                     f"got {size!r}")
  return int(size)


def check_temperature(temperature) -> float:
  if temperature is None or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
    raise ValueError(f"the temperature must be from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}, "
                     f"got {temperature!r}")
  return float(temperature)


@dataclasses.dataclass
class Rendered:
  """What the page shows: the selected photo's three views, every result, and a status text."""
  gray: np.ndarray | None = None
  colorized: np.ndarray | None = None
  original: np.ndarray | None = None
  results: list[tuple[np.ndarray, str]] = dataclasses.field(default_factory=list)
  messages: list[str] = dataclasses.field(default_factory=list)


class Demo:
  """The app's logic: loaded models, the kept network outputs, colorizing photos.

  Thread-safe: Gradio calls it from worker threads.
  """

  def __init__(self, colorizers: dict[str, Any], cache_bytes: int = OUTPUT_CACHE_BYTES):
    if not colorizers:
      raise ValueError(NO_MODEL_HINT)
    self.colorizers = dict(colorizers)
    self.cache_bytes = cache_bytes
    self._outputs: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
    self._lock = threading.Lock()

  @classmethod
  def load(cls, sources: Sequence[ModelSource]) -> "Demo":
    return cls({s.label: load_colorizer(s) for s in sources})

  @property
  def model_names(self) -> list[str]:
    return list(self.colorizers)

  def colorizer(self, model: str):
    if model not in self.colorizers:
      raise ValueError(f"unknown model {model!r}; the demo serves {', '.join(self.colorizers)}")
    return self.colorizers[model]

  def default_temperature(self, model: str) -> float:
    return float(self.colorizer(model).model_cfg.get("temperature", 0.38))

  def default_size(self, model: str) -> int:
    size = int(self.colorizer(model).size)
    return min(MAX_SIZE, max(MIN_SIZE, size))

  def network_output(self, model: str, photo: Photo, size: int) -> np.ndarray:
    """The model's output `(1, h, w, C)` for a photo at input size `size`, kept (LRU): the raw
    313 logits of a bins model (decoded again at each temperature), else its prediction
    (`colorization.predict`: ab, or the RGB of a model that predicts RGB)."""
    key = (model, size, photo.key)
    with self._lock:
      if key in self._outputs:
        self._outputs.move_to_end(key)
        return self._outputs[key]
    colorizer = self.colorizer(model)
    l_1SS1 = colorization.model_input_l(photo.rgb_HW3, size)[None]
    out = (colorizer.raw_output(l_1SS1) if uses_temperature(colorizer)
           else colorization.predict(colorizer, l_1SS1))
    with self._lock:
      self._outputs[key] = out
      while sum(o.nbytes for o in self._outputs.values()) > self.cache_bytes and len(
          self._outputs) > 1:
        self._outputs.popitem(last=False)
    return out

  def colorize(self, model: str, photo: Photo, size: int, temperature: float | None) -> np.ndarray:
    """uint8 RGB of the photo's size, as `colorjax colorize` makes it: the model's ab at input
    size `size` joined to the photo's L, or the upsampled RGB of a model that predicts RGB;
    `temperature` (None: the model's own) applies to 313-bin models only."""
    colorizer = self.colorizer(model)
    size = check_size(size)
    prediction_1hwC = self.network_output(model, photo, size)
    if uses_temperature(colorizer):
      model_cfg = dict(colorizer.model_cfg)
      if temperature is not None:
        model_cfg["temperature"] = check_temperature(temperature)
      prediction_1hwC = np.asarray(heads.output_to_ab(prediction_1hwC, model_cfg))
    return colorization.full_resolution_result(photo.rgb_HW3, prediction_1hwC[0],
                                               colorization.predicts_rgb(colorizer))

  def render(self, photos: Sequence[Photo], selected: int, model: str, size, temperature,
             read_errors: Sequence[str] = ()) -> Rendered:
    """Colorizes every photo; never raises: a failure becomes the status message."""
    rendered = Rendered(messages=list(read_errors))
    if not photos:
      if not rendered.messages:
        rendered.messages.append("Upload photos or pick a bundled one.")
      return rendered
    start = time.perf_counter()
    try:
      size = check_size(size)
      colorizer = self.colorizer(model)
      results = [self.colorize(model, photo, size, temperature) for photo in photos]
    except ValueError as e:  # a bad control value (sent by hand: the page's controls are bounded)
      rendered.messages.append(f"cannot colorize with {model} at {size!r} px: {e}")
      return rendered
    except Exception as e:  # pylint: disable=broad-except
      # E.g. a U-Net given a size its depth does not divide: the message, never a dead server.
      _log.warning("colorizing failed", exc_info=True)
      rendered.messages.append(f"cannot colorize with {model} at {size!r} px: "
                               f"{type(e).__name__}: {e}")
      return rendered
    selected = selected if 0 <= selected < len(photos) else 0
    photo = photos[selected]
    rendered.gray = photo.gray_HW3
    rendered.colorized = results[selected]
    rendered.original = photo.rgb_HW3 if photo.is_color else None
    rendered.results = [(rgb, p.name) for rgb, p in zip(results, photos)]
    height, width = photo.rgb_HW3.shape[:2]
    temperature_text = (f", temperature {float(temperature):.2f}"
                        if uses_temperature(colorizer) and temperature is not None else "")
    rendered.messages.append(
        f"{len(photos)} photo{'s' if len(photos) > 1 else ''} colorized by {model} at "
        f"{size} px{temperature_text} in {time.perf_counter() - start:.2f} s; showing "
        f"{photo.name} ({width} x {height})"
        + ("" if photo.is_color else ", a gray photo"))
    return rendered


# ------------------------------------------------------------------------------------------------
# The Gradio page
# ------------------------------------------------------------------------------------------------


def gradio_available() -> bool:
  return importlib.util.find_spec("gradio") is not None


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~"})


def status_markdown(messages: Sequence[str]) -> str:
  """The messages as a Markdown list, verbatim (file names may hold Markdown's characters)."""
  return "\n".join(f"- {m.translate(_MARKDOWN_SPECIAL)}" for m in messages)


def build_app(demo: Demo):
  """The Gradio Blocks of the page (built inside `serve`, which sets its temporary directory)."""
  import gradio as gr  # pylint: disable=g-import-not-at-top

  first = demo.model_names[0]
  bins = uses_temperature(demo.colorizer(first))

  def temperature_update(model):
    on = uses_temperature(demo.colorizer(model))
    return gr.update(value=demo.default_temperature(model), interactive=on,
                     info=("annealed mean of the 313 bins: low is vivid, 1 is the plain mean"
                           if on else "only for 313-bin (ECCV16-style) models"))

  def key_of(photos, selected, model, size, temperature):
    return (tuple(p.key for p in photos), selected, model, size, temperature)

  def show(photos, selected, model, size, temperature, read_errors=()):
    """Everything: [gray, colorized, original, results, status, shown_key]."""
    r = demo.render(photos, selected, model, size, temperature, read_errors)
    return (r.gray, r.colorized, r.original, r.results, status_markdown(r.messages),
            key_of(photos, selected, model, size, temperature))

  def on_control(photos, selected, model, size, temperature, shown_key):
    """A slider moved: [colorized, results, status, shown_key]; the gray and original views stay
    (re-sending them would re-encode and rewrite their files for nothing)."""
    key = key_of(photos, selected, model, size, temperature)
    if key == shown_key:
      # The slider's keyboard handling sends its last value twice; rendering it again would
      # rewrite the shown image's file while the browser may be reading it.
      return gr.skip()
    r = demo.render(photos, selected, model, size, temperature)
    return r.colorized, r.results, status_markdown(r.messages), key

  def on_upload(paths, model, size, temperature):
    photos, errors = read_photos(paths or [])
    return (photos, 0) + show(photos, 0, model, size, temperature, errors)

  def on_bundled(name, model, size, temperature):
    try:
      photos, errors = [bundled_photo(name)], []
    except Exception as e:  # pylint: disable=broad-except
      photos, errors = [], [str(e)]
    return (photos, 0) + show(photos, 0, model, size, temperature, errors)

  def on_model(photos, selected, model):
    try:
      size, temperature = demo.default_size(model), demo.default_temperature(model)
      return ((temperature_update(model), gr.update(value=size))
              + show(photos, selected, model, size, temperature))
    except Exception as e:  # pylint: disable=broad-except
      return (gr.skip(),) * 2 + show([], 0, model, None, None, [str(e)])

  def on_select(photos, model, size, temperature, evt):
    """A result picked: [selected] + everything but the results gallery itself."""
    gray_view, colorized_view, original_view, _, status_text, key = show(
        photos, evt.index, model, size, temperature)
    return evt.index, gray_view, colorized_view, original_view, status_text, key
  # Gradio passes the selection to the argument annotated so (a real class, not the string that
  # postponed annotations would leave).
  on_select.__annotations__["evt"] = gr.SelectData

  with gr.Blocks(title="colorjax demo", analytics_enabled=False,
                 delete_cache=(3600, 3600)) as app:
    photos = gr.State([])
    selected = gr.State(0)
    gr.Markdown("## colorjax: automatic colorization\nUpload photos (or pick a bundled one); "
                "the model sees only their lightness.")
    with gr.Row():
      with gr.Column(scale=1, min_width=280):
        upload = gr.File(label="Photos", file_count="multiple", type="filepath", elem_id="upload")
        bundled = gr.Dropdown(bundled_photo_names(), value=None, label="... or a bundled photo",
                              elem_id="bundled")
        model = gr.Dropdown(demo.model_names, value=first, label="Model", elem_id="model")
        temperature = gr.Slider(MIN_TEMPERATURE, MAX_TEMPERATURE, step=0.01,
                                value=demo.default_temperature(first),
                                interactive=bins, label="Temperature", elem_id="temperature")
        size = gr.Slider(MIN_SIZE, MAX_SIZE, step=SIZE_STEP, value=demo.default_size(first),
                         label="Network input size (px)", elem_id="size",
                         info="the photo is resized to this square for the model only")
        status = gr.Markdown(status_markdown(["Upload photos or pick a bundled one."]),
                             elem_id="status")
      with gr.Column(scale=3):
        with gr.Row():
          image_args = dict(type="numpy", format="png", interactive=False,
                            buttons=["download", "fullscreen"])
          gray = gr.Image(label="Gray (the model's input)", elem_id="gray", **image_args)
          colorized = gr.Image(label="Colorized", elem_id="colorized", **image_args)
          original = gr.Image(label="Original", elem_id="original", **image_args)
        results = gr.Gallery(label="All results (select one to compare it; PNG download)",
                             format="png", columns=5, height=300, elem_id="results",
                             interactive=False, buttons=["download", "fullscreen"])
    shown_key = gr.State(None)  # what the page shows: (photos, selected, model, size, temperature)
    shown = [gray, colorized, original, results, status, shown_key]
    controls = [model, size, temperature]
    app.load(temperature_update, [model], [temperature])
    # Live: the network's outputs are kept, a temperature only decodes them again.
    rerenders = [
        temperature.input(on_control, [photos, selected] + controls + [shown_key],
                          [colorized, results, status, shown_key], trigger_mode="always_last",
                          show_progress="hidden"),
        # A new size runs (and first compiles) the network: while one runs, only the latest of
        # the sizes passed meanwhile is queued.
        size.input(on_control, [photos, selected] + controls + [shown_key],
                   [colorized, results, status, shown_key], trigger_mode="always_last"),
        results.select(on_select, [photos] + controls,
                       [selected, gray, colorized, original, status, shown_key]),
    ]
    # New photos or a new model drop the re-renders still queued (they hold the old photos and
    # settings and would otherwise overwrite the new page when they finish).
    upload.upload(on_upload, [upload] + controls, [photos, selected] + shown, cancels=rerenders)
    upload.clear(on_upload, [upload] + controls, [photos, selected] + shown, cancels=rerenders)
    bundled.input(on_bundled, [bundled] + controls, [photos, selected] + shown, cancels=rerenders)
    model.input(on_model, [photos, selected, model], [temperature, size] + shown,
                cancels=rerenders)
  return app


@contextlib.contextmanager
def _uvicorn_keeps_logging() -> Iterator[None]:
  """Gradio's web server (uvicorn) applies its default logging config with `dictConfig`, which
  closes every logging handler of the process (colorjax's console, a test runner's captures).
  Applied incrementally instead, it changes no handler; its records reach colorjax's."""
  from uvicorn import config as uvicorn_config  # pylint: disable=g-import-not-at-top
  default = dict(uvicorn_config.LOGGING_CONFIG)
  uvicorn_config.LOGGING_CONFIG.clear()
  uvicorn_config.LOGGING_CONFIG.update(version=1, incremental=True)
  try:
    yield
  finally:
    uvicorn_config.LOGGING_CONFIG.clear()
    uvicorn_config.LOGGING_CONFIG.update(default)


@contextlib.contextmanager
def serve(demo: Demo, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> Iterator[str]:
  """Runs the app in background threads until the `with` block ends; yields its URL.

  Uploads and served images go to a temporary directory, removed afterwards.
  """
  # Imported before GRADIO_TEMP_DIR is set: the few paths Gradio fixes at import (an empty
  # editor-history folder it makes at every launch) stay in its own default folder, and a second
  # server in this process does not recreate the first one's removed temporary directory.
  import gradio  # pylint: disable=g-import-not-at-top,unused-import
  saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
  os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
  with tempfile.TemporaryDirectory(prefix="colorjax-demo-") as temp_dir:
    # Read by Gradio when the app is built and at each upload.
    os.environ["GRADIO_TEMP_DIR"] = temp_dir
    app = None
    try:
      app = build_app(demo)
      app.queue(default_concurrency_limit=1)
      with _uvicorn_keeps_logging():
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                   show_error=False, ssr_mode=False, max_file_size=MAX_UPLOAD)
      yield app.local_url
    finally:
      if app is not None:
        app.close(verbose=False)
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v


def wait_for_interrupt() -> None:
  """Blocks the main thread (the server runs in others) until Ctrl+C or SIGTERM."""
  while True:
    time.sleep(1)


def run(checkpoints: Sequence[str] = (), weights: Sequence[str] = (), *,
        host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
  """`colorjax demo`: loads the models and serves the page until Ctrl+C. Returns the exit status."""
  if not gradio_available():
    print(f"colorjax demo: error: the demo needs Gradio: {INSTALL_HINT}", file=sys.stderr)
    return 2
  try:
    sources = model_sources(checkpoints, weights)
  except NoModelError as e:
    print(f"colorjax demo: {e}", file=sys.stderr)
    return 2
  demo = Demo.load(sources)
  # `kill` stops the server like Ctrl+C does, so its temporary directory is removed.
  previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    with serve(demo, host=host, port=port) as url:
      print(f"colorjax demo: serving {', '.join(demo.model_names)} on {url} (Ctrl+C stops it)",
            flush=True)
      try:
        wait_for_interrupt()
      except KeyboardInterrupt:
        print("colorjax demo: stopped")
  except OSError as e:
    print(f"colorjax demo: error: cannot serve on {host}:{port}: {e}", file=sys.stderr)
    return 2
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
  return 0
