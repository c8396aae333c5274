"""The `colorjax` command: thin argument parsing over the library (train, eval, colorize, ...)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

# colorjax imports other than these two dependency-free helpers are inside the commands, so that
# `colorjax --help` and each command load only what they use (JAX, Orbax, the model zoo ...).
from colorjax import paths
from colorjax import workdir

DEFAULT_CONFIG = "eccv16:quickstart"


def _path(text: str) -> str:
  # Every path argument is made absolute here, where it enters (relative to the current
  # directory, `~` expanded, `gs://` kept).
  return paths.absolute(text)


def _data(text: str) -> str:
  return text if text == "bundled" else _path(text)


def _split_config_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
  """Separates `--config.KEY=VALUE` / `--config.KEY VALUE` overrides from the other arguments."""
  rest, overrides = [], {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      key, eq, value = arg[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise SystemExit(f"colorjax: error: --config.{key} needs a value")
        value = argv[i + 1]
        i += 1
      overrides[key] = value
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def _load_config(spec: str, overrides: dict[str, str]):
  from colorjax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.with_absolute_paths(
      config_lib.apply_overrides(config_lib.load_config(spec), overrides))


def _add_config_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--config", default=DEFAULT_CONFIG,
                 help="config file[:variants], e.g. configs/eccv16.py:tiny or eccv16:quickstart "
                      f"(default {DEFAULT_CONFIG}); override keys with --config.KEY=VALUE")


def _add_model_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--checkpoint", type=_path,
                 help="a training workdir or an exported model directory")
  p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  p.add_argument("--weights", type=_path, help="official ECCV16 PyTorch state_dict file (.pth)")
  p.add_argument("--temperature", type=float, help="annealed-mean temperature (bins models)")


def _colorizer(args):
  from colorjax.inference import Colorizer  # pylint: disable=g-import-not-at-top
  if bool(args.checkpoint) == bool(args.weights):
    raise ValueError("give exactly one of --checkpoint DIR and --weights FILE.pth")
  if args.checkpoint:
    return Colorizer.from_checkpoint(args.checkpoint, args.step, args.temperature)
  return Colorizer.from_torch_eccv16(args.weights, args.temperature)


def cmd_train(args, overrides) -> int:
  from colorjax import train  # pylint: disable=g-import-not-at-top
  config = _load_config(args.config, overrides)
  train.train_and_evaluate(config, args.workdir)
  print(f"trained; checkpoints, TensorBoard logs, {workdir.METRICS_JSONL} and "
        f"{workdir.SAMPLES_SUBDIR}/ are in {args.workdir}")
  return 0


def cmd_bench(args, overrides) -> int:
  from colorjax import bench  # pylint: disable=g-import-not-at-top
  config = _load_config(args.config, overrides)
  bench.run(config, steps=args.steps, include_pipeline=not args.no_pipeline)
  return 0


def cmd_eval(args) -> int:
  from colorjax import data, evaluate, images, metrics, prior  # pylint: disable=g-import-not-at-top
  colorizer = _colorizer(args)
  source = data.image_source(args.data)
  given_prior = prior.load_prior(args.prior) if args.prior else None
  failed = []

  def pairs():
    for i in range(len(source)):
      encoded, name = source[i]
      try:
        if encoded is None:
          raise images.ImageReadError(name, "the file could not be read")
        rgb = images.decode_rgb(encoded, name)
        if args.protocol == "full" and min(rgb.shape[:2]) < metrics.SSIM_MIN_SIDE:
          raise images.ImageReadError(
              name, f"{rgb.shape[1]}x{rgb.shape[0]} pixels is too small to evaluate at full size "
              f"(SSIM needs {metrics.SSIM_MIN_SIDE}x{metrics.SSIM_MIN_SIDE}; --protocol center "
              "resizes it)")
        yield name, rgb
      except images.ImageReadError as e:
        failed.append(images.display_name(name))
        print(f"colorjax eval: skipping {e}", file=sys.stderr)

  fid_variables = None
  if args.fid_weights:
    from colorjax.models import inception  # pylint: disable=g-import-not-at-top
    fid_variables = inception.load_inception(args.fid_weights)
  result, acc = evaluate.evaluate_images(colorizer, pairs(), protocol=args.protocol,
                                         size=args.size, prior=given_prior,
                                         fid_variables=fid_variables,
                                         fid_batch_size=args.fid_batch_size,
                                         batch_size=args.batch_size)
  result["skipped"] = len(failed)
  result["skipped_files"] = failed
  csv_path = args.csv or os.path.splitext(args.out)[0] + ".csv"
  acc.write(result, args.out, csv_path)
  for name in ("model", "gray"):
    r = result[name]
    fid_text = f"  FID {r['fid']:.2f}" if "fid" in r else ""
    print(f"{name:>5}: PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  AuC {r['auc']:.4f}  "
          f"AuC(rebal) {r['auc_rebalanced']:.4f}  colorfulness {r['colorfulness']:.1f}{fid_text}")
  print(f"{result['images']} images ({result['protocol']} protocol, from the model's "
        f"{result['output']}), {len(failed)} skipped, in {acc.seconds:.1f} s "
        f"({result['images'] / max(acc.seconds, 1e-9):.2f} images/s); wrote {args.out} and "
        f"{csv_path}")
  return 0


def cmd_report(args) -> int:
  from colorjax import report  # pylint: disable=g-import-not-at-top
  index = report.write_report(args.runs, args.out, title=args.title,
                              game_dirs=[tuple(p) for p in args.game_pairs or ()],
                              game_rounds=args.game_rounds)
  print(f"wrote {index}, {index.parent / 'report.md'} and {index.parent / 'game.html'}")
  return 0


def cmd_colorize(args) -> int:
  from colorjax import colorization  # pylint: disable=g-import-not-at-top
  return colorization.run(args.inputs, args.output, checkpoint=args.checkpoint, weights=args.weights,
                      step=args.step, temperature=args.temperature, size=args.size,
                      batch_size=args.batch_size, progress=not args.quiet)


def cmd_prior(args) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from colorjax import prior  # pylint: disable=g-import-not-at-top
  p = prior.compute_prior(args.data, image_size=args.size, max_images=args.max_images,
                          seed=args.seed, sigma=args.sigma)
  np.save(args.out, p)
  print(f"wrote the 313-bin prior of {args.data} to {args.out}")
  return 0


def cmd_import(args) -> int:
  import time  # pylint: disable=g-import-not-at-top
  from colorjax import checkpoint, inference  # pylint: disable=g-import-not-at-top
  from colorjax.models import eccv16  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  variables = eccv16.load_torch_eccv16(args.src)
  checkpoint.save_model(args.out, inference.official_eccv16_config(), variables)
  print(f"imported {args.src} -> {args.out} in {time.perf_counter() - start:.1f} s")
  return 0


def cmd_prepare(args) -> int:
  from colorjax import prepare  # pylint: disable=g-import-not-at-top
  path = prepare.prepare_folder(args.folder, args.out, name=args.name, max_side=args.max_side)
  print(f"prepared {path}; train with --config.data.train={path}")
  return 0


def cmd_demo(args) -> int:
  from colorjax import demo  # pylint: disable=g-import-not-at-top
  return demo.run(args.checkpoint or (), args.weights or (), host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="colorjax", description="Automatic image colorization in JAX/Flax.")
  parser.add_argument("-v", "--verbose", action="store_true")
  parser.add_argument("--no-compile-cache", action="store_true",
                      help="do not use the persistent compilation cache (colorjax/compilation_cache.py)")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("train", help="train a model (default: a small ECCV16 on the bundled photos)")
  _add_config_args(p)
  p.add_argument("--workdir", default=workdir.DEFAULT_WORKDIR, type=_path,
                 help="checkpoints and logs; resumed if present")

  p = sub.add_parser("bench", help="time the train and eval steps and the input pipeline")
  _add_config_args(p)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--no-pipeline", action="store_true", help="skip the real-input measurement")

  p = sub.add_parser("eval", help="metrics of a model on a folder or dataset, beside gray")
  _add_model_args(p)
  p.add_argument("--data", required=True, type=_data, help="image folder, prepared dataset or 'bundled'")
  p.add_argument("--protocol", choices=("full", "center"), default="full")
  p.add_argument("--size", type=int, help="model input size / center-crop size")
  p.add_argument("--prior", type=_path, help="prior .npy for the rebalanced AuC (default: the set's own)")
  p.add_argument("--out", default=workdir.EVAL_JSON, type=_path)
  p.add_argument("--csv", type=_path, help="per-image rows (default: next to --out)")
  p.add_argument("--fid-weights", type=_path, help="pytorch-fid Inception weights file "
                 "(pt_inception-2015-12-05-6726825d.pth) to add FID; see colorjax/fid.py")
  p.add_argument("--fid-batch-size", type=int, default=16)
  p.add_argument("--batch-size", type=int, default=8, help="photos per model call")

  p = sub.add_parser("report", help="HTML + Markdown comparison of runs, and a "
                     "'which one is real?' game page")
  p.add_argument("runs", nargs="+", type=_path, help="training workdirs and/or `colorjax eval` output dirs")
  p.add_argument("--out", required=True, type=_path, help="output folder (index.html, report.md, game.html)")
  p.add_argument("--title")
  p.add_argument("--game-pairs", nargs=2, action="append", type=_path, metavar=("COLORIZED_DIR", "PHOTOS_DIR"),
                 help="also play on a `colorjax colorize` output folder and its input folder")
  p.add_argument("--game-rounds", type=int, default=30)

  p = sub.add_parser("colorize", help="colorize image files or folders")
  p.add_argument("inputs", nargs="+", type=_path)
  p.add_argument("--output", "-o", required=True, type=_path)
  _add_model_args(p)
  p.add_argument("--size", type=int, help="model input size (default: the model's)")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--quiet", action="store_true")

  p = sub.add_parser("prior", help="the empirical 313-bin ab prior of a dataset")
  p.add_argument("data", type=_data)
  p.add_argument("out", type=_path)
  p.add_argument("--size", type=int, default=64, help="short side images are reduced to")
  p.add_argument("--max-images", type=int,
                 help="count a uniform random sample of this many images (default: all)")
  p.add_argument("--seed", type=int, default=0, help="seed of the --max-images sample")
  p.add_argument("--sigma", type=float, default=5.0)

  p = sub.add_parser("import", help="import official ECCV16 PyTorch weights")
  p.add_argument("model", choices=("eccv16",))
  p.add_argument("src", type=_path, help="the release's state_dict file")
  p.add_argument("out", type=_path, help="output model directory")

  p = sub.add_parser("prepare", help="turn an image folder into an ArrayRecord tfds dataset")
  p.add_argument("folder", type=_path)
  p.add_argument("out", type=_path)
  p.add_argument("--name", default="colorjax_folder")
  p.add_argument("--max-side", type=int)

  p = sub.add_parser("demo", help="colorize photos in the browser (a Gradio app; needs the "
                     "'demo' extra)")
  p.add_argument("--checkpoint", action="append", type=_path, help="a training workdir or an "
                 "exported model (repeat to offer several; default: ./workdir, the quickstart's)")
  p.add_argument("--weights", action="append", type=_path, help="official ECCV16 PyTorch "
                 "state_dict file (.pth; repeatable)")
  p.add_argument("--port", type=int, default=7860)
  p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  rest, overrides = _split_config_overrides(argv)
  args = build_parser().parse_args(rest)
  if overrides and args.command not in ("train", "bench"):
    raise SystemExit("colorjax: error: --config.* overrides apply to train and bench only")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if args.command in ("train", "bench") and os.environ.get("COLORJAX_RETAIN_FREED_MEMORY",
                                                           "1") != "0":
    # Before JAX starts: XLA:CPU steps then reuse their temporaries' pages instead of faulting
    # them in anew every step (benchmarks/README.md). Harmless on GPU/TPU hosts.
    from colorjax.ops import xla_cpu  # pylint: disable=g-import-not-at-top
    xla_cpu.retain_freed_memory()
  from colorjax import compilation_cache, writers  # pylint: disable=g-import-not-at-top
  writers.setup_console_logging(args.verbose)
  if not args.no_compile_cache:
    compilation_cache.enable()
  commands = {"train": lambda: cmd_train(args, overrides), "bench": lambda: cmd_bench(args, overrides),
              "eval": lambda: cmd_eval(args), "colorize": lambda: cmd_colorize(args),
              "prior": lambda: cmd_prior(args), "import": lambda: cmd_import(args),
              "prepare": lambda: cmd_prepare(args), "report": lambda: cmd_report(args),
              "demo": lambda: cmd_demo(args)}
  try:
    return commands[args.command]()
  except KeyboardInterrupt:
    print("colorjax: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if args.verbose or not _is_user_error(e):
      raise
    print(f"colorjax {args.command}: error: {e}", file=sys.stderr)
    return 2


def _is_user_error(e: Exception) -> bool:
  """Errors whose message says what to fix; anything else keeps its traceback."""
  from colorjax import checkpoint  # pylint: disable=g-import-not-at-top
  return isinstance(e, (ValueError, FileNotFoundError, checkpoint.CheckpointError,
                        FloatingPointError))


if __name__ == "__main__":
  sys.exit(main())
