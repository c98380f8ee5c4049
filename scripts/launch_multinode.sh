#!/usr/bin/env bash
# Multi-node torchrun launch of proxyless-search or proxyless-train (DDP: NCCL on GPU, gloo on CPU).
#
# Run the same command on every node; only NODE_RANK differs. Everything after the command
# name is passed through to it (Hydra overrides).
#
#   NNODES=2 NODE_RANK=0 RDZV_ENDPOINT=node0.example:29500 NPROC_PER_NODE=8 \
#     scripts/launch_multinode.sh search data=imagenet data.root=/data hydra.run.dir=/shared/runs/s1
#   NNODES=2 NODE_RANK=1 RDZV_ENDPOINT=node0.example:29500 NPROC_PER_NODE=8 \
#     scripts/launch_multinode.sh search data=imagenet data.root=/data hydra.run.dir=/shared/runs/s1
#
# Variables: NNODES (required), NODE_RANK (required), RDZV_ENDPOINT host:port reachable from
# all nodes (required; usually node 0), NPROC_PER_NODE (default: "gpu" = one per GPU, use a
# number on CPU), RDZV_ID (job id shared by the nodes, default "proxyless"), RDZV_BACKEND
# (default c10d). The output dir must be on storage shared by the nodes if resume is to work
# from any node; only global rank 0 writes checkpoints and arch files.
set -euo pipefail

if [[ $# -lt 1 || ( "$1" != search && "$1" != train ) ]]; then
  sed -n '2,16p' "$0" >&2
  echo "usage: $0 search|train [hydra overrides...]" >&2
  exit 2
fi
cmd="proxyless-$1"
shift
: "${NNODES:?set NNODES}" "${NODE_RANK:?set NODE_RANK}" "${RDZV_ENDPOINT:?set RDZV_ENDPOINT (host:port)}"

entry="$(command -v "$cmd")" || { echo "$cmd not found: pip install the package first" >&2; exit 1; }
exec torchrun \
  --nnodes="$NNODES" \
  --node_rank="$NODE_RANK" \
  --nproc_per_node="${NPROC_PER_NODE:-gpu}" \
  --rdzv_id="${RDZV_ID:-proxyless}" \
  --rdzv_backend="${RDZV_BACKEND:-c10d}" \
  --rdzv_endpoint="$RDZV_ENDPOINT" \
  "$entry" "$@"
