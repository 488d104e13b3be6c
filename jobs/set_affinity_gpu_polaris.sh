#!/bin/bash
# Give each MPI rank on a node its own GPU, then run the command: put it between mpiexec and
# the program (jobs/polaris_ddp.pbs does). Follows ALCF's Polaris example: local rank r gets
# GPU (num_gpus - 1 - r % num_gpus), so ranks 0..3 take GPUs 3..0, matching Polaris's
# GPU-to-CPU-socket affinity under `--depth 8 --cpu-bind depth`.
#
# The local rank comes from the launcher: PMI_LOCAL_RANK (Cray PALS on Polaris), else
# MPI_LOCALRANKID (MPICH hydra). With no GPU on the node (a CPU test) the command just runs.
set -euo pipefail

if command -v nvidia-smi >/dev/null 2>&1; then
    num_gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
else
    num_gpus=0
fi

if [ "$num_gpus" -gt 0 ]; then
    local_rank="${PMI_LOCAL_RANK:-${MPI_LOCALRANKID:-}}"
    # guessing 0 would stack every rank on one GPU and train slowly without a word
    if [ -z "$local_rank" ]; then
        echo "set_affinity_gpu_polaris.sh: neither PMI_LOCAL_RANK nor MPI_LOCALRANKID is set;" \
            "run me under mpiexec" >&2
        exit 2
    fi
    gpu=$((num_gpus - 1 - local_rank % num_gpus))
    export CUDA_VISIBLE_DEVICES="$gpu"
fi

exec "$@"
