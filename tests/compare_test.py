"""Tests of benchmarks.compare and benchmarks.torch_models: both sides train the same models."""
import jax
import numpy as np
import pytest

from benchmarks import compare, torch_models
from colorjax import sharding, train


def _colorjax_param_counts(model: str, size: int,
                           overrides: dict[str, str] | None = None) -> dict[str, int]:
  """Trained parameters of G and D (ECCV16's frozen 313 -> 2 decode layer is inference-only)."""
  config = compare.colorjax_config(model, size, 2, overrides or {})
  setup = train.create_setup(config, None)
  mesh = sharding.create_mesh(1)
  state = jax.eval_shape(lambda: train.create_state(setup, config, mesh)[0])
  frozen = set(config.optimizer.frozen)

  def trained(path, x):
    return 0 if {getattr(k, "key", None) for k in path} & frozen else int(np.prod(x.shape))

  return {part: sum(jax.tree.leaves(jax.tree_util.tree_map_with_path(trained,
                                                                      state[part]["params"])))
          for part in ("gen", "disc") if part in state}


def _torch_param_count(module) -> int:
  return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", [128, 256])
def test_pix2pix_models_have_the_same_parameters(size):
  counts = _colorjax_param_counts("pix2pix", size)
  num_downs = int(round(np.log2(size)))
  assert counts["gen"] == _torch_param_count(torch_models.UNetTorch(num_downs, 64))
  assert counts["disc"] == _torch_param_count(torch_models.PatchGANTorch(3, 64, 3))


def test_eccv16_models_have_the_same_parameters():
  counts = _colorjax_param_counts("eccv16", 128)
  assert counts["gen"] == _torch_param_count(torch_models.ECCV16Torch())
  assert "disc" not in counts


def test_narrower_models_have_the_same_parameters():
  """The sizes `--config.` overrides give colorjax's networks, as compare builds them in torch."""
  eccv16 = _colorjax_param_counts("eccv16", 32, {"model.width": "0.0625"})
  assert eccv16["gen"] == _torch_param_count(torch_models.ECCV16Torch(0.0625))
  pix2pix = _colorjax_param_counts("pix2pix", 32, {"model.ngf": "4", "disc.ndf": "4"})
  assert pix2pix["gen"] == _torch_param_count(torch_models.UNetTorch(5, 4))
  assert pix2pix["disc"] == _torch_param_count(torch_models.PatchGANTorch(3, 4, 3))


def test_compare_times_both_sides_and_reports_the_ratio(capsys):
  result = compare.compare("pix2pix", 32, 2, repeats=2, torch_format="nchw", torch_adam="fused",
                           overrides={"model.ngf": "4", "disc.ndf": "4",
                                      "model.conv_impl": "xla"})
  assert result["torch"]["format"] == "nchw" and result["torch"]["adam"] == "fused"
  for side in ("colorjax", "torch"):
    rates = result["per_repeat_images_per_s"][side]
    assert len(rates) == 2 and all(r > 0 for r in rates)
    assert result[side]["cpu_s_per_step"] > 0
    repeats = result[side]["per_repeat"]
    assert [r["step_s"] for r in repeats] == pytest.approx([2 / rate for rate in rates])
    assert all(r["minor_faults"] >= 0 and r["involuntary_switches"] >= 0 for r in repeats)
    low, high = result[side]["step_spread"]
    times = [r["step_s"] for r in repeats]
    assert low == pytest.approx(min(times) / np.median(times) - 1)
    assert high == pytest.approx(max(times) / np.median(times) - 1)
  pairs = [c / t for c, t in zip(result["per_repeat_images_per_s"]["colorjax"],
                                 result["per_repeat_images_per_s"]["torch"])]
  np.testing.assert_allclose(result["ratio_median_of_pairs"], np.median(pairs), rtol=1e-9)
  assert "colorjax / torch:" in capsys.readouterr().out


def test_a_failing_side_is_reported_with_its_error():
  with pytest.raises(RuntimeError, match="colorjax benchmark process failed(.|\n)*no_such_key"):
    compare.compare("pix2pix", 32, 2, repeats=1, overrides={"model.no_such_key": "1"})
