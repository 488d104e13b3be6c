#!/bin/bash
# Data-parallel training on a Slurm cluster with torchrun: one torchrun per node, which starts
# one worker per GPU and forms the group through a c10d rendezvous on the first node. Use it
# where srun cannot start one task per GPU, or to get torchrun's worker restarts.
#
# Submit from the repo root (or pass --chdir=<repo>); results/ must exist there for the log:
#   sbatch jobs/slurm_torchrun.sh
#   sbatch --nodes=1 --gpus-per-node=0 --cpus-per-task=2 \
#          --export=ALL,CPU_ONLY=1,NPROC_PER_NODE=2,EPOCHS=1 jobs/slurm_torchrun.sh
# Knobs: CONFIG, EPOCHS, TRAIN_ARGS, RESULTS_DIR, RUN_ID, CPU_ONLY, MAX_RESTARTS, STEP_GRACE,
# PREFLIGHT, GRID as in jobs/slurm.sh (PREFLIGHT=1 runs the doctor with the same srun +
# torchrun line), and
#   NPROC_PER_NODE  workers per node      (default: the GPUs Slurm gave the node; 1 without)
#   RDZV_PORT       rendezvous port       (default: python -m mnist_hpc.job port)
#
# Preemption: as in jobs/slurm.sh, except that torchrun does not pass SIGUSR1 to its workers
# (pytorch/pytorch#154849): the USR1 warning reaches torchrun as SIGTERM, which torchrun does
# forward; the workers checkpoint and exit 75, and the job is requeued.
#
# Each directive is explained on the line above it, so the directive line itself stays plain.
#
# a name for squeue; the run directory is named by job id, not by this
#SBATCH --job-name=mnist-torchrun
# nodes; one torchrun on each
#SBATCH --nodes=2
# one task per node: torchrun itself starts the per-GPU workers
#SBATCH --ntasks-per-node=1
# GPUs per node, all for this node's torchrun; CPU-only runs pass --gpus-per-node=0
#SBATCH --gpus-per-node=4
# cores for all of the node's workers
#SBATCH --cpus-per-task=32
# walltime limit H:MM:SS; the USR1 warning below leaves time for a checkpoint
#SBATCH --time=0:30:00
# log file, relative to the job's working directory (the submit dir or --chdir); results/ must exist
#SBATCH --output=results/slurm-%j.out
# a requeued job appends to its log instead of overwriting the first attempt
#SBATCH --open-mode=append
# SIGUSR1 to this batch shell (B:) 120 s before the time limit: checkpoint, then requeue
#SBATCH --signal=B:USR1@120
# allow requeue (by this script after a checkpoint, or by the scheduler after a node failure)
#SBATCH --requeue
set -euo pipefail

# Slurm runs a spooled copy of this script: the repo is the working directory
if [ ! -f jobs/slurm_lib.sh ]; then
    echo "slurm_torchrun.sh: $PWD is not the mnist_hpc repo: sbatch from its root or pass --chdir" >&2
    exit 2
fi
# shellcheck source=jobs/slurm_lib.sh
source jobs/slurm_lib.sh
slurm_job_setup

# SLURM_GPUS_ON_NODE is set only when the job holds GPUs
NPROC_PER_NODE="${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}"
RDZV_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
# derived from the job id, as the trainer derives it (mnist_hpc/job/port.py)
RDZV_PORT="${RDZV_PORT:-$(python -m mnist_hpc.job port)}"
# torchrun forwards SIGTERM to its workers, not SIGUSR1
FORWARD_USR1_AS=TERM

print_header "mnist_hpc on Slurm (torchrun)" \
    workers "$((SLURM_JOB_NUM_NODES * NPROC_PER_NODE)) ($NPROC_PER_NODE per node)" \
    rendezvous "$RDZV_HOST:$RDZV_PORT (c10d)"

launch=(
    srun
    --kill-on-bad-exit=1
    --ntasks-per-node=1
    --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}"
    torchrun
    --nnodes="$SLURM_JOB_NUM_NODES"
    --nproc-per-node="$NPROC_PER_NODE"
    --rdzv-backend=c10d
    --rdzv-endpoint="$RDZV_HOST:$RDZV_PORT"
    --rdzv-id="$SLURM_JOB_ID"
    --module
)
preflight "${launch[@]}" mnist_hpc.doctor "${train_args[@]}" \
    --out "$RESULTS_DIR/doctor-$RUN_ID.json"
run_step "${launch[@]}" mnist_hpc.train "${train_args[@]}"
