"""The run directory's layout: every file and folder name colorjax writes there, defined once.

The names a training workdir, an eval output and an exported model hold; this module imports
nothing.

A training workdir::

  WORKDIR/config.json                    the run's config (checkpoint.write_config)
  WORKDIR/checkpoints/<step>/            Orbax steps, each with colorjax_checksums.json
  WORKDIR/metrics.jsonl                  one JSON line per logged step (writers)
  WORKDIR/tensorboard/                   TensorBoard events (writers)
  WORKDIR/samples/step_00000100.png      gray | model | truth grids of the evaluations
  WORKDIR/prior.npy, prior.json          the ab prior computed for the run, and how it was sampled

An exported model (`colorjax import`, checkpoint.save_model): `DIR/model.json` + `DIR/variables/`.
`colorjax eval` writes `metrics.json` (its default `--out`) and the per-image `metrics.csv`
beside it.
"""
from __future__ import annotations

DEFAULT_WORKDIR = "workdir"  # `colorjax train --workdir`, where `colorjax demo` looks first
CONFIG_FILE = "config.json"
CHECKPOINTS_SUBDIR = "checkpoints"
CHECKSUMS_FILE = "colorjax_checksums.json"  # inside each step directory
METRICS_JSONL = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"
SAMPLES_SUBDIR = "samples"
SAMPLES_GLOB = f"{SAMPLES_SUBDIR}/step_*.png"
PRIOR_FILE = "prior.npy"
PRIOR_SAMPLE_FILE = "prior.json"  # how the workdir's prior.npy was sampled

MODEL_FILE = "model.json"
VARIABLES_SUBDIR = "variables"

EVAL_JSON = "metrics.json"
EVAL_CSV = "metrics.csv"


def sample_name(step: int) -> str:
  """File name, inside SAMPLES_SUBDIR, of the sample grid of the evaluation at `step`."""
  return f"step_{step:08d}.png"
