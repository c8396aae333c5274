"""Runs every colab/*.ipynb top to bottom in a real Jupyter kernel on CPU, with tiny parameters.

Each notebook's cell tagged "parameters" is followed by an injected cell that overrides its values
(as papermill does); every notebook ends with assertions on what it produced, so a notebook that
runs but produces the wrong thing fails here.
"""
import ast
import pathlib

import nbclient
import nbformat
import numpy as np
import pytest
from PIL import Image

from colorjax import color
from colorjax.models import eccv16

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
CELL_TIMEOUT_S = 300
# XLA's own convolutions: on CPU the tiny model's step compiles 2-3x faster than with the
# default lowering, and these tests are about the notebooks, not the convolutions.
FAST_COMPILE = {"model.conv_impl": "xla"}


def _parameter_names(source: str) -> set[str]:
  return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
          for target in node.targets if isinstance(target, ast.Name)}


def run_notebook(name: str, workdir: pathlib.Path, **parameters) -> nbformat.NotebookNode:
  """Executes colab/<name>.ipynb in `workdir` with `parameters` replacing the defaults."""
  nb = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  (index,) = [i for i, cell in enumerate(nb.cells)
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
  unknown = set(parameters) - _parameter_names(nb.cells[index].source)
  assert not unknown, f"{name}.ipynb has no parameters {sorted(unknown)}"
  injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
  injected.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, injected)
  client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                   resources={"metadata": {"path": str(workdir)}})
  client.execute()
  return nb


def _text_outputs(nb: nbformat.NotebookNode) -> str:
  return "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def _has_image_output(nb: nbformat.NotebookNode) -> bool:
  return any("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []))


def test_quickstart_trains_plots_and_colorizes(tmp_path):
  nb = run_notebook("quickstart", tmp_path, CONFIG="eccv16:tiny", TRAIN_STEPS=2,
                    WORKDIR=str(tmp_path / "run"), NUM_PHOTOS=2, OVERRIDES=FAST_COMPILE)
  assert "OK: 2 steps, 2 photos colorized" in _text_outputs(nb)
  assert _has_image_output(nb)
  assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_train_on_your_data_prepares_trains_and_evaluates(tmp_path, photos_dir):
  folder = tmp_path / "photos" / "holiday"
  folder.mkdir(parents=True)
  # Real photos at one small size: the full-resolution evaluation compiles once per image size.
  for path in sorted(photos_dir.glob("*.jpg"))[:8]:
    Image.open(path).convert("RGB").resize((64, 48), Image.BICUBIC).save(folder / path.name)
  (folder / "notes.jpg").write_bytes(b"not an image")
  nb = run_notebook("train_on_your_data", tmp_path, IMAGE_FOLDER=str(tmp_path / "photos"),
                    DATA_DIR=str(tmp_path / "data"), WORKDIR=str(tmp_path / "run"),
                    CONFIG="eccv16:tiny", TRAIN_STEPS=2, OVERRIDES=FAST_COMPILE)
  text = _text_outputs(nb)
  assert "8 images in" in text and "1 unreadable files skipped" in text, text
  assert "OK: 8 images prepared, 2 steps, evaluated on 8" in text, text
  np.testing.assert_allclose(np.load(tmp_path / "data" / "prior.npy").sum(), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def random_eccv16_weights(tmp_path_factory) -> pathlib.Path:
  """A full-width ECCV16 state_dict in the release's layout, random weights, saved by torch."""
  import torch  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  state_dict = {}
  for key, shape in eccv16.torch_state_dict_shapes(1.0).items():
    if key == "model_out.weight":
      value = (color.AB_BINS.T / color.AB_SCALE)[:, :, None, None]
    elif len(shape) == 4:  # He-scaled, so activations keep their size through 23 layers
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith(("running_var", ".weight")):  # BatchNorm scale and variance
      value = rng.uniform(0.8, 1.2, shape)
    else:  # biases and running means
      value = rng.normal(0.0, 0.05, shape)
    state_dict[key] = torch.from_numpy(np.asarray(value, np.float32))
  path = tmp_path_factory.mktemp("weights") / "eccv16_random.pth"
  torch.save(state_dict, path)
  return path


def test_import_eccv16_imports_colorizes_and_sweeps_the_temperature(tmp_path,
                                                                    random_eccv16_weights):
  nb = run_notebook("import_eccv16", tmp_path, WEIGHTS=str(random_eccv16_weights),
                    MODEL_DIR=str(tmp_path / "eccv16"), SIZE=32)
  text = _text_outputs(nb)
  assert "32,236,011 parameters" in text, text
  assert "OK:" in text and "mode" in text
  assert (tmp_path / "eccv16" / "model.json").is_file()
