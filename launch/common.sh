# Shared by the launch scripts (sourced, not run): argument parsing, required variables, the
# train command and the device set-up.
#
# Every script takes the same kinds of arguments, in any order:
#   NAME=VALUE        (upper case) a launch variable, e.g. CONFIG=eccv16:tiny WORKDIR=runs/a;
#                     the same variable may also come from the environment
#   key.sub=value     (lower case) a config override, passed on as --config.key.sub=value
#   --anything ...    passed to `colorjax train` unchanged (e.g. --config.train.steps=100, -v)
#   other words       positional arguments of the script (before any option)

# The script's name in messages.
LAUNCH_NAME=${LAUNCH_NAME:-$(basename "$0")}

die() {
  echo "$LAUNCH_NAME: error: $*" >&2
  exit 2
}

# Sets POSITIONAL and TRAIN_ARGS from the script's arguments; exports NAME=VALUE ones.
parse_launch_args() {
  POSITIONAL=()
  TRAIN_ARGS=()
  local arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Z][A-Z0-9_]*= ]]; then
      export "${arg?}"
    elif [[ $arg =~ ^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*= ]]; then
      TRAIN_ARGS+=("--config.$arg")
    elif [[ $arg == -* ]] || ((${#TRAIN_ARGS[@]})); then
      TRAIN_ARGS+=("$arg")
    else
      POSITIONAL+=("$arg")
    fi
  done
}

# Fails, naming every missing variable, unless all the named variables are set and non-empty.
require_vars() {
  local name missing=()
  for name in "$@"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  if ((${#missing[@]})); then
    echo "$LAUNCH_NAME: error: missing required variable(s): ${missing[*]}" \
      "(give them as NAME=VALUE arguments or in the environment)" >&2
    [[ -z ${USAGE:-} ]] || echo "$USAGE" >&2
    exit 2
  fi
}

# The command every process runs; extra arguments go before the user's, so the user's win.
train_command() {
  TRAIN_COMMAND=("${PYTHON:-python3}" -m colorjax.cli train --config "$CONFIG"
    --workdir "$WORKDIR" "$@" "${TRAIN_ARGS[@]}")
}

# XLA_FLAGS without any --xla_force_host_platform_device_count (a launch script sets its own).
xla_flags_without_device_count() {
  local flag kept=()
  for flag in ${XLA_FLAGS:-}; do
    [[ $flag == --xla_force_host_platform_device_count=* ]] || kept+=("$flag")
  done
  echo "${kept[*]}"
}

# The GPUs this host lets us use, one index per line: CUDA_VISIBLE_DEVICES if set, else every
# GPU nvidia-smi lists; nothing when there is none.
list_gpus() {
  if [[ -n ${CUDA_VISIBLE_DEVICES+x} ]]; then
    tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | sed '/^$/d'
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' || true
  fi
}

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
  "${PYTHON:-python3}" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# XLA flags for GPU training, added to XLA_FLAGS by the GPU launchers; set GPU_XLA_FLAGS to
# change them ('' adds none). Flags are jaxlib-version dependent (an unknown one stops XLA):
#   --xla_gpu_enable_latency_hiding_scheduler=true  overlap the gradient all-reduce with the
#       backward pass (the one that matters for data parallelism)
#   --xla_gpu_all_reduce_combine_threshold_bytes=N  combine small all-reduces into buckets of N
#       bytes (larger = fewer NCCL calls)
#   --xla_gpu_enable_command_buffer=  disable CUDA graphs (try when a step hangs or misbehaves)
# Memory: XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 (default 0.75) gives XLA more of each GPU;
# XLA_PYTHON_CLIENT_PREALLOCATE=false allocates on demand (slower; for shared GPUs).
DEFAULT_GPU_XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true"

add_gpu_xla_flags() {
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }${GPU_XLA_FLAGS-$DEFAULT_GPU_XLA_FLAGS}"
  XLA_FLAGS=${XLA_FLAGS% }
}
