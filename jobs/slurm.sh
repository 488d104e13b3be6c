#!/bin/bash
# Data-parallel training on a Slurm cluster: one task per GPU, launched by srun.
#
# Submit from the repo root (or pass --chdir=<repo>); results/ must exist there for the log:
#   sbatch jobs/slurm.sh
#   sbatch --nodes=4 --export=ALL,CONFIG=default,EPOCHS=20,TRAIN_ARGS="--batch-size 256" jobs/slurm.sh
#   sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 \
#          --export=ALL,CPU_ONLY=1,EPOCHS=1 jobs/slurm.sh            # CPUs only, e.g. a test cluster
# Knobs (sbatch --export=ALL,NAME=value,...; commas separate variables, so a value cannot hold one):
#   CONFIG       preset name or YAML path                          (default: default)
#   EPOCHS       epochs to train                                   (default: the preset's)
#   TRAIN_ARGS   more trainer flags, split on whitespace, never evaluated by a shell
#   RESULTS_DIR  where run directories go                          (default: <repo>/results)
#   RUN_ID       run directory name; pass an old one to resume it  (default: slurm-<job id>)
#   CPU_ONLY     1: train on CPUs with gloo (pair with --gpus-per-node=0)  (default: 0)
#   MAX_RESTARTS requeues after a checkpoint before giving up     (default: 20)
#   STEP_GRACE   seconds the step may outlive its failed run (srun waiting for the tasks of a
#                lost node) before it is killed and the job ends  (default: 30)
#   PREFLIGHT    1: run python -m mnist_hpc.doctor first, with the same srun line and flags;
#                a failed check ends the job before training; report in
#                RESULTS_DIR/doctor-RUN_ID.json                  (default: 0)
#   GRID         a grid of trainer flags (mnist_hpc/grids/*.yaml) run as a job array, one
#                point per array task, in slurm-<array job id>_<index>:
#                  sbatch --array=0-4 --export=ALL,GRID=mnist_hpc/grids/seeds.yaml jobs/slurm.sh
#                then python -m mnist_hpc.grid summary GRID results/slurm-<array job id>_*
#                (python -m mnist_hpc.grid show GRID prints the --array range)  (default: none)
#   MODULES, MNIST_HPC_VENV: the software environment, see envs/slurm.sh
# Sizes come from the allocation (SLURM_JOB_NUM_NODES, SLURM_NTASKS): change them with
# sbatch options only; srun below inherits them, so no count is typed twice.
#
# Preemption and the time limit: 120 s before the limit Slurm sends SIGUSR1 to this shell;
# run_step (jobs/slurm_lib.sh) forwards it to srun, which forwards it to every task; the
# trainer writes a checkpoint and exits 75, and run_step requeues the job, which resumes the
# same run directory. `scancel --signal=USR1 --batch <jobid>` tries the path by hand. A job
# cancelled with scancel (SIGTERM) is never requeued.
#
# Each directive is explained on the line above it, so the directive line itself stays plain.
#
# a name for squeue; the run directory is named by job id, not by this
#SBATCH --job-name=mnist-ddp
# nodes; one process per GPU on each
#SBATCH --nodes=2
# tasks (ranks) per node: one per GPU
#SBATCH --ntasks-per-node=4
# GPUs per node, matching the tasks; CPU-only runs pass --gpus-per-node=0
#SBATCH --gpus-per-node=4
# cores per task, for the data path and the collectives' threads
#SBATCH --cpus-per-task=8
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
    echo "slurm.sh: $PWD is not the mnist_hpc repo: sbatch from its root or pass --chdir" >&2
    exit 2
fi
# shellcheck source=jobs/slurm_lib.sh
source jobs/slurm_lib.sh
slurm_job_setup

print_header "mnist_hpc on Slurm (srun)" \
    tasks "$SLURM_NTASKS, ${SLURM_CPUS_PER_TASK:-1} CPUs each"

# One task per GPU; each picks cuda:<SLURM_LOCALID>. --cpus-per-task is repeated because
# srun 22.05-23.02 does not inherit it from sbatch. --kill-on-bad-exit: one failed rank
# ends the step instead of leaving the others waiting in a collective.
launch=(
    srun
    --kill-on-bad-exit=1
    --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}"
    python -m
)
preflight "${launch[@]}" mnist_hpc.doctor "${train_args[@]}" \
    --out "$RESULTS_DIR/doctor-$RUN_ID.json"
run_step "${launch[@]}" mnist_hpc.train "${train_args[@]}"
