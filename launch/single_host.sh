#!/usr/bin/env bash
# Trains on every accelerator of one host with ONE process (GPUs, a single TPU VM, or the CPU):
# the batch is split over all local devices by jax.jit, no jax.distributed needed.
#
#   launch/single_host.sh CONFIG=eccv16 WORKDIR=runs/eccv16 [NAME=VALUE ...] \
#       [data.train=/data/imagenet_prepared | --config.KEY=VALUE ...]
#
# Variables (NAME=VALUE arguments or the environment):
#   CONFIG         required: config spec, e.g. eccv16 or configs/eccv16.py:bf16
#   WORKDIR        required: checkpoints and logs; the same command resumes from it
#   PYTHON         the interpreter with colorjax installed (default python3)
#   CPU_DEVICES    on a host without GPU/TPU: split the CPU into this many devices
#                  (--xla_force_host_platform_device_count; default: one device)
#   GPU_XLA_FLAGS  added to XLA_FLAGS when GPUs are visible (default
#                  --xla_gpu_enable_latency_hiding_scheduler=true; see launch/common.sh for
#                  the others worth trying, and XLA_PYTHON_CLIENT_MEM_FRACTION)
#   CUDA_VISIBLE_DEVICES  restricts the GPUs used (default: all)
set -euo pipefail

LAUNCH_NAME=single_host.sh
USAGE="usage: launch/single_host.sh CONFIG=... WORKDIR=... [NAME=VALUE ...] [key=value | --config.KEY=VALUE ...]"
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_launch_args "$@"
((${#POSITIONAL[@]} == 0)) || die "unexpected argument '${POSITIONAL[0]}'
$USAGE"
require_vars CONFIG WORKDIR

mapfile -t GPUS < <(list_gpus)
if ((${#GPUS[@]})); then
  add_gpu_xla_flags
  echo "$LAUNCH_NAME: ${#GPUS[@]} GPU(s), XLA_FLAGS=$XLA_FLAGS" >&2
elif [[ -n ${CPU_DEVICES:-} ]]; then
  [[ $CPU_DEVICES =~ ^[1-9][0-9]*$ ]] || die "CPU_DEVICES must be a positive integer, got '$CPU_DEVICES'"
  flags=$(xla_flags_without_device_count)
  export XLA_FLAGS="${flags:+$flags }--xla_force_host_platform_device_count=$CPU_DEVICES"
fi

# One process: never join a cluster, even inside a SLURM allocation of several tasks.
train_command --config.distributed=off
echo "$LAUNCH_NAME: ${TRAIN_COMMAND[*]}" >&2
exec "${TRAIN_COMMAND[@]}"
