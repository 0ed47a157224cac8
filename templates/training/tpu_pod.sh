#!/usr/bin/env bash
# Train a config (default `large`) on a multi-host Cloud TPU slice.
#
#   templates/training/tpu_pod.sh --project P --zone us-central2-b \
#       --data gs://B/training/v1 --workdir gs://B/runs/large [--accelerator-type v4-32] \
#       [--name earthembed-train] [--version RUNTIME] [--config large] [--dry-run] [-- TRAIN_ARGS]
#   templates/training/tpu_pod.sh --project P --zone us-central2-b --delete [--dry-run]
#
# 1. create the TPU VM slice (v4-32: 16 chips on 4 hosts, runtime tpu-ubuntu2204-base;
#    v5litepod-16: 16 chips on 4 hosts, runtime v2-alpha-tpuv5-lite; --version overrides);
# 2. build a wheel of this checkout and copy it with constraints.txt to every host;
# 3. on every host: a Python 3.11 virtualenv made by uv (the TPU images ship Python 3.10), the
#    wheel with the constraints.txt pins and jax[tpu] at constraints.txt's jax version;
# 4. start `python -m model.main --config=CONFIG --data=DATA --workdir=WORKDIR` on every host at
#    once, in the background (log: ~/train.log; `gcloud compute tpus tpu-vm ssh NAME --zone Z
#    --worker=0 --command 'tail -f ~/train.log'`). JAX_COORDINATOR_ADDRESS (worker 0) is the
#    multi-host variable on which model.train calls jax.distributed.initialize(); every host
#    reads its own TFRecord shards; checkpoints and metrics go to --workdir, so a rerun resumes.
# A slice costs money every hour it exists, training or idle: --delete it when done.
# --dry-run prints every command (shell-quoted) instead of running it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/dist/tpu}"
PYTHON="${PYTHON:-python3}"
COORDINATOR_PORT=8476
VENV='~/earthembed-venv'

project="" zone="" name="earthembed-train" accelerator="v4-32" version="" config="large"
data="" workdir="" dry_run=0 delete=0 train_args=()

usage() { sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --project) project="${2:?}"; shift 2 ;;
    --zone) zone="${2:?}"; shift 2 ;;
    --name) name="${2:?}"; shift 2 ;;
    --accelerator-type) accelerator="${2:?}"; shift 2 ;;
    --version) version="${2:?}"; shift 2 ;;
    --config) config="${2:?}"; shift 2 ;;
    --data) data="${2:?}"; shift 2 ;;
    --workdir) workdir="${2:?}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --delete) delete=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown option $1 (--help)" ;;
  esac
done

# Every value that reaches a remote shell is checked first: no quoting surprises there.
[[ $project =~ ^[a-z][-a-z0-9]{4,28}[a-z0-9]$ ]] || die "--project: a project id, got '$project'"
[[ $zone =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone: e.g. us-central2-b, got '$zone'"
[[ $name =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--name: lowercase letters, digits, -"

# shlex.quote in bash: bare when every character is safe, else single-quoted.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\"\'\"\'}"
  fi
}
run() {
  local line="" arg
  for arg in "$@"; do line+="${line:+ }$(quote "$arg")"; done
  echo "$line"
  if ((!dry_run)); then "$@"; fi
}

where=(--project "$project" --zone "$zone")
if ((delete)); then
  run gcloud compute tpus tpu-vm delete "$name" "${where[@]}" --quiet
  exit 0
fi

gcs='^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[A-Za-z0-9_=+@%-][A-Za-z0-9._=+@%-]*)*/?$'
[[ $data =~ $gcs ]] || die "--data: a gs:// folder of build-training-data output, got '$data'"
[[ $workdir =~ $gcs ]] || die "--workdir: a gs:// folder, got '$workdir'"
[[ $config =~ ^[a-z0-9_]+$ ]] || die "--config: a config name, got '$config'"
[[ $accelerator =~ ^v[0-9a-z]+-[0-9]+$ ]] || die "--accelerator-type: e.g. v4-32, got '$accelerator'"
for arg in "${train_args[@]}"; do
  [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]] || die "training argument '$arg' has unsafe characters"
done
if [[ -z $version ]]; then
  case "$accelerator" in
    v5litepod-*) version="v2-alpha-tpuv5-lite" ;;
    *) version="tpu-ubuntu2204-base" ;;
  esac
fi
uv_pin="$(grep '^uv==' "$ROOT/constraints.txt")"
jax_version="$(grep '^jax==' "$ROOT/constraints.txt" | cut -d= -f3)"

run gcloud compute tpus tpu-vm create "$name" "${where[@]}" \
  --accelerator-type "$accelerator" --version "$version"
run "$PYTHON" -m pip wheel --no-deps --wheel-dir "$WHEEL_DIR" "$ROOT"
run gcloud compute tpus tpu-vm scp "$WHEEL_DIR"/earthembed-*.whl "$ROOT/constraints.txt" \
  "$name:" "${where[@]}" --worker=all
install="set -e; python3 -m pip install --user --quiet $uv_pin; rm -rf $VENV"
install+="; ~/.local/bin/uv venv --python 3.11 $VENV"
install+="; ~/.local/bin/uv pip install --python $VENV/bin/python -c ~/constraints.txt"
install+=" ~/earthembed-*.whl 'jax[tpu]==$jax_version'"
run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command "$install"

if ((dry_run)); then
  coordinator="WORKER0_IP"
  run gcloud compute tpus tpu-vm describe "$name" "${where[@]}" \
    --format 'value(networkEndpoints[0].ipAddress)'
else
  coordinator="$(gcloud compute tpus tpu-vm describe "$name" "${where[@]}" \
    --format 'value(networkEndpoints[0].ipAddress)')"
fi
train="export JAX_COORDINATOR_ADDRESS=$coordinator:$COORDINATOR_PORT; cd ~"
train+="; nohup $VENV/bin/python -m model.main --config=$config --data=$data --workdir=$workdir"
train+="${train_args[*]:+ ${train_args[*]}} < /dev/null > ~/train.log 2>&1 &"
run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command "$train"
