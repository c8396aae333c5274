#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice (e.g. v5litepod-32, v4-64): runs the same `colorjax train`
# on every host of the slice at once with `gcloud compute tpus tpu-vm ssh --worker=all`; each
# host runs one process over its local chips and jax.distributed.initialize() finds the others
# from the TPU metadata (the script passes --config.distributed=on).
#
#   launch/tpu_pod.sh TPU_NAME=my-pod ZONE=us-central2-b CONFIG=eccv16 \
#       WORKDIR=gs://my-bucket/runs/eccv16 [NAME=VALUE ...] [key=value | --config.KEY=VALUE ...]
#
# Run it from your workstation (or Cloud Shell) with gcloud authenticated. Every host must have
# colorjax installed (SETUP can do it) and read the data at the same path (gs:// or a mount).
#
# Variables (NAME=VALUE arguments or the environment):
#   TPU_NAME, ZONE  required: the TPU VM and its zone
#   CONFIG          required: config spec, e.g. eccv16 or eccv16:bf16
#   WORKDIR         required: storage shared by all hosts. A gs:// path needs gcsfs on the hosts
#                   (pip install 'etils[epath-gcs]'; Orbax reaches gs:// through etils.epath and
#                   TensorStore). A directory of a filesystem mounted on every host (Filestore
#                   NFS, a gcsfuse mount) works too: say so with SHARED_WORKDIR=1.
#   PROJECT         the GCP project (default: gcloud's configured one)
#   REPO_DIR        the colorjax checkout on each host, `cd`ed into first (default ~/colorjax;
#                   '' runs from the home directory with an installed colorjax)
#   SETUP           a shell command run on every host before training, e.g.
#                   SETUP='pip install -q "git+https://github.com/ORG/colorjax" "etils[epath-gcs]"'
#   PYTHON          the interpreter on the hosts (default python3)
#   GCLOUD          the gcloud binary (default gcloud)
#   TPU_SSH_ARGS    extra options for `gcloud compute tpus tpu-vm ssh` (e.g. --internal-ip)
set -euo pipefail

LAUNCH_NAME=tpu_pod.sh
USAGE="usage: launch/tpu_pod.sh TPU_NAME=... ZONE=... CONFIG=... WORKDIR=gs://... [NAME=VALUE ...] [key=value | --config.KEY=VALUE ...]"
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_launch_args "$@"
((${#POSITIONAL[@]} == 0)) || die "unexpected argument '${POSITIONAL[0]}'
$USAGE"
require_vars TPU_NAME ZONE CONFIG WORKDIR
if [[ $WORKDIR != gs://* && ${SHARED_WORKDIR:-0} != 1 ]]; then
  die "WORKDIR=$WORKDIR is not a gs:// path. Every host of the pod writes checkpoints there, so
it must be storage they all share: use gs://BUCKET/..., or a filesystem mounted on every host
(Filestore, gcsfuse) and set SHARED_WORKDIR=1."
fi

train_command --config.distributed=on
REMOTE=""
if [[ -n ${SETUP:-} ]]; then
  REMOTE+="$SETUP && "
fi
REPO_DIR=${REPO_DIR-"~/colorjax"}
if [[ $REPO_DIR == "~/"* ]]; then  # the remote home, not ours
  REMOTE+="cd ~/$(printf '%q' "${REPO_DIR#"~/"}") && "
elif [[ -n $REPO_DIR ]]; then
  REMOTE+="cd $(printf '%q' "$REPO_DIR") && "
fi
REMOTE+="PYTHONUNBUFFERED=1 $(printf '%q ' "${TRAIN_COMMAND[@]}")"
REMOTE=${REMOTE% }

echo "$LAUNCH_NAME: on every host of $TPU_NAME: $REMOTE" >&2
# shellcheck disable=SC2086  # TPU_SSH_ARGS is a list of options
exec "${GCLOUD:-gcloud}" compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" \
  ${PROJECT:+--project="$PROJECT"} --worker=all ${TPU_SSH_ARGS:-} --command="$REMOTE"
