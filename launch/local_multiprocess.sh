#!/usr/bin/env bash
# Runs `colorjax train` as N processes on this machine, joined by jax.distributed: multi-host
# training on one host. Use it to test multi-process runs on a CPU (each process gets
# DEVICES_PER_PROCESS forced host devices) or to run one process per GPU (or per group of GPUs).
#
#   launch/local_multiprocess.sh N CONFIG=eccv16:tiny WORKDIR=runs/mp [NAME=VALUE ...] \
#       [train.steps=100 | --config.train.steps=100 ...]
#
# Variables (NAME=VALUE arguments or the environment):
#   CONFIG               required: config spec, e.g. eccv16:quickstart or configs/eccv16.py:tiny
#   WORKDIR              required: checkpoints and logs, written by all processes (same machine)
#   PLATFORM             cpu | gpu (default: gpu when a GPU is visible, else cpu)
#   DEVICES_PER_PROCESS  cpu: forced host devices per process (default 1);
#                        gpu: GPUs per process (default: the GPUs / N); process i gets GPUs
#                        i*K .. i*K+K-1 of CUDA_VISIBLE_DEVICES (or of all GPUs)
#   PORT                 coordinator port on 127.0.0.1 (default: a free one)
#   PYTHON               the interpreter with colorjax installed (default python3)
#   GRACE_SECONDS        when a process fails, the others get SIGTERM, then SIGKILL after this
#                        many seconds (default 10)
#   KEEP_COMPILATION_CACHE  1 keeps JAX_COMPILATION_CACHE_DIR on CPU (see below why it is dropped)
#
# Each process gets JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT, JAX_NUM_PROCESSES=N and
# JAX_PROCESS_ID=i, which colorjax passes to jax.distributed.initialize (config.distributed
# 'auto'). Output lines are prefixed with [i]. The script waits for all processes; if one fails,
# it stops the others and exits with that process's status. SIGTERM/SIGINT are forwarded to
# every process.
set -uo pipefail

LAUNCH_NAME=local_multiprocess.sh
USAGE="usage: launch/local_multiprocess.sh N CONFIG=... WORKDIR=... [NAME=VALUE ...] [key=value | --config.KEY=VALUE ...]"
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  die "needs bash >= 5.1 (wait -n -p), this is $BASH_VERSION"
fi

parse_launch_args "$@"
NUM_PROCESSES=${POSITIONAL[0]:-}
[[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ ]] ||
  die "the first argument must be the number of processes N (a positive integer), got '$NUM_PROCESSES'
$USAGE"
((${#POSITIONAL[@]} <= 1)) || die "unexpected argument '${POSITIONAL[1]}'
$USAGE"
require_vars CONFIG WORKDIR

mapfile -t GPUS < <(list_gpus)
PLATFORM=${PLATFORM:-$( ((${#GPUS[@]})) && echo gpu || echo cpu)}
case $PLATFORM in
  cpu)
    DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-1}
    ;;
  gpu)
    ((${#GPUS[@]})) || die "PLATFORM=gpu but no GPU is visible (nvidia-smi, CUDA_VISIBLE_DEVICES)"
    DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-$((${#GPUS[@]} / NUM_PROCESSES))}
    ((DEVICES_PER_PROCESS * NUM_PROCESSES <= ${#GPUS[@]} && DEVICES_PER_PROCESS > 0)) ||
      die "$NUM_PROCESSES processes x DEVICES_PER_PROCESS=$DEVICES_PER_PROCESS GPUs do not fit" \
        "the ${#GPUS[@]} visible GPUs"
    add_gpu_xla_flags
    ;;
  *) die "PLATFORM must be cpu or gpu, got '$PLATFORM'" ;;
esac
[[ $DEVICES_PER_PROCESS =~ ^[1-9][0-9]*$ ]] ||
  die "DEVICES_PER_PROCESS must be a positive integer, got '$DEVICES_PER_PROCESS'"
# In a multi-process CPU run only process 0 gets hits from jax's persistent compilation cache, so
# it reaches the first collective while the others still compile; a lead of tens of seconds
# breaks gloo's first rendezvous (one process fails, the others hang). So no cache on CPU.
if [[ $PLATFORM == cpu && -n ${JAX_COMPILATION_CACHE_DIR:-} && ${KEEP_COMPILATION_CACHE:-0} != 1 ]]; then
  echo "$LAUNCH_NAME: not using JAX_COMPILATION_CACHE_DIR on CPU (KEEP_COMPILATION_CACHE=1 keeps it)" >&2
  unset JAX_COMPILATION_CACHE_DIR
fi
PORT=${PORT:-$(free_port)} || die "could not find a free port (set PORT)"
GRACE_SECONDS=${GRACE_SECONDS:-10}

train_command
echo "$LAUNCH_NAME: $NUM_PROCESSES processes x $DEVICES_PER_PROCESS $PLATFORM device(s)," \
  "coordinator 127.0.0.1:$PORT: ${TRAIN_COMMAND[*]}" >&2

# Environment of process $1, into PROCESS_ENV.
process_env() {
  local i=$1
  PROCESS_ENV=(JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$NUM_PROCESSES"
    JAX_PROCESS_ID="$i" PYTHONUNBUFFERED=1)
  if [[ $PLATFORM == cpu ]]; then
    local flags
    flags=$(xla_flags_without_device_count)
    PROCESS_ENV+=(JAX_PLATFORMS=cpu
      XLA_FLAGS="${flags:+$flags }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
  else
    local mine ids
    mine=$(IFS=,; echo "${GPUS[*]:i*DEVICES_PER_PROCESS:DEVICES_PER_PROCESS}")
    ids=$(seq -s, 0 $((DEVICES_PER_PROCESS - 1)))
    # JAX_LOCAL_DEVICE_IDS: inside a SLURM allocation jax would otherwise keep one GPU per process.
    PROCESS_ENV+=(CUDA_VISIBLE_DEVICES="$mine" JAX_LOCAL_DEVICE_IDS="$ids")
  fi
}

# Copies stdin to stdout with each line prefixed by $1, line by line (GNU sed -u, BSD sed -l).
prefix_lines() {
  if sed -u '' </dev/null 2>/dev/null; then
    sed -u "s/^/$1/"
  else
    sed -l "s/^/$1/"
  fi
}

PIDS=()
stop_all() {  # $1: signal
  local pid
  for pid in "${PIDS[@]}"; do
    [[ -z $pid ]] || kill "-$1" "$pid" 2>/dev/null
  done
}
SIGNALED=""
trap 'SIGNALED=TERM; echo "$LAUNCH_NAME: SIGTERM, forwarding to the processes" >&2; stop_all TERM' TERM
trap 'SIGNALED=INT; echo "$LAUNCH_NAME: SIGINT, forwarding to the processes" >&2; stop_all INT' INT

for ((i = 0; i < NUM_PROCESSES; i++)); do
  process_env "$i"
  env "${PROCESS_ENV[@]}" "${TRAIN_COMMAND[@]}" \
    > >(prefix_lines "[$i] ") 2>&1 &
  PIDS+=("$!")
done

status=0
remaining=$NUM_PROCESSES
while ((remaining > 0)); do
  finished=""
  live=()
  for pid in "${PIDS[@]}"; do [[ -z $pid ]] || live+=("$pid"); done
  wait -n -p finished "${live[@]}"
  rc=$?
  [[ -n ${finished:-} ]] || continue  # a trapped signal interrupted the wait
  for i in "${!PIDS[@]}"; do
    [[ ${PIDS[i]} != "$finished" ]] || { PIDS[i]=""; index=$i; }
  done
  remaining=$((remaining - 1))
  if ((rc != 0 && status == 0)); then
    status=$rc
    if ((remaining > 0)) && [[ -z $SIGNALED ]]; then
      echo "$LAUNCH_NAME: process $index exited with status $rc; stopping the other" \
        "$remaining" >&2
      stop_all TERM
      ( sleep "$GRACE_SECONDS"; stop_all KILL ) >/dev/null 2>&1 &
      KILLER=$!
    fi
  fi
done
[[ -z ${KILLER:-} ]] || kill "$KILLER" 2>/dev/null
wait 2>/dev/null  # the output prefixers
if ((status != 0)); then
  echo "$LAUNCH_NAME: failed with status $status" >&2
elif [[ -n $SIGNALED ]]; then
  status=$([[ $SIGNALED == TERM ]] && echo 143 || echo 130)
fi
exit "$status"
