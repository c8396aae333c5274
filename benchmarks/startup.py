"""Cold vs warm start of a `colorjax` command, timed as whole processes.

  python -m benchmarks.startup --repeats 3 -- colorize chelsea.jpg --weights eccv16.pth --output out
  python -m benchmarks.startup --repeats 3 --remove w --prepare "train --config eccv16:tiny \
      --config.train.steps=2 --workdir w" --first-line "step 3" -- train --config eccv16:tiny \
      --config.train.steps=4 --workdir w

Each repeat runs the command twice in a row with the same fresh compilation cache
(`COLORJAX_CACHE_DIR`, a new temporary directory per repeat): first cold (empty cache), then
warm (the cache the cold run filled). `--prepare` runs a command before each of the two (untimed,
with the cache off), e.g. the first part of a training run that the timed command resumes, after
removing the `--remove` paths (what the previous timed run left behind).
Reported per kind: wall seconds and CPU seconds (user + system of the process and its
children; on a loaded host the CPU seconds vary less than the wall) as min / median / max, and
the cache's size after the warm run. With `--first-line TEXT` the time from the process's start
to the first line of its output containing TEXT is reported too (e.g. `'step 1'` for the first
logged training step).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _directory_bytes(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_timed(argv: list[str], env: dict[str, str], first_line: str | None) -> dict[str, float]:
  """Runs `colorjax ARGV`; wall and CPU seconds (and seconds to `first_line`, if given)."""
  cpu = _cpu_seconds()
  start = time.perf_counter()
  process = subprocess.Popen([sys.executable, "-m", "colorjax.cli", *argv], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  first = None
  lines = []
  for line in process.stdout:
    lines.append(line)
    if first is None and first_line is not None and first_line in line:
      first = time.perf_counter() - start
  status = process.wait()
  wall = time.perf_counter() - start
  if status != 0:
    raise SystemExit(f"`colorjax {shlex.join(argv)}` failed (exit status {status}):\n"
                     + "".join(lines[-20:]))
  result = {"wall_s": wall, "cpu_s": _cpu_seconds() - cpu}
  if first_line is not None:
    if first is None:
      raise SystemExit(f"no output line of `colorjax {shlex.join(argv)}` contains {first_line!r}")
    result["first_line_s"] = first
  return result


def _summary(values: list[float]) -> dict[str, float]:
  return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
          "max": round(max(values), 2)}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3, help="cold + warm pairs")
  parser.add_argument("--prepare", help="colorjax arguments run (untimed, cache off) before each "
                                        "timed run")
  parser.add_argument("--remove", action="append", default=[],
                      help="a path removed before each --prepare (repeatable)")
  parser.add_argument("--first-line", help="also time the first output line containing this")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- colorjax arguments")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the colorjax command after --")
  if args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}")
  times = {"cold": [], "warm": []}
  sizes = []
  for _ in range(args.repeats):
    cache = pathlib.Path(tempfile.mkdtemp(prefix="colorjax-startup-cache-"))
    env = {**os.environ, "COLORJAX_CACHE_DIR": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    try:
      for kind in ("cold", "warm"):
        for path in args.remove:
          shutil.rmtree(path, ignore_errors=True)
        if args.prepare:
          subprocess.run([sys.executable, "-m", "colorjax.cli", "--no-compile-cache",
                          *shlex.split(args.prepare)], env=env, check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times[kind].append(run_timed(command, env, args.first_line))
      sizes.append(_directory_bytes(cache))
    finally:
      shutil.rmtree(cache, ignore_errors=True)
  result = {"command": "colorjax " + shlex.join(command), "repeats": args.repeats,
            "load_average": [round(x, 2) for x in os.getloadavg()]}
  for kind, runs in times.items():
    result[kind] = {key: _summary([r[key] for r in runs]) for key in runs[0]}
  result["warm_over_cold_wall"] = _summary(
      [w["wall_s"] / c["wall_s"] for c, w in zip(times["cold"], times["warm"])])
  result["cache_mb"] = _summary([s / 1e6 for s in sizes])
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
