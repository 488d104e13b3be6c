# shellcheck shell=bash
# Environment for a generic Slurm cluster, sourced by jobs/slurm.sh and jobs/slurm_torchrun.sh.
# A site adapts the job templates here, in one place:
#
#   MODULES        modules to load, space separated (e.g. "cuda/12.4 nccl"); empty: none
#   MNIST_HPC_VENV the Python environment to activate; default: this repo's .venv if present
#
# Both can also be set per job: sbatch --export=ALL,MODULES="gcc cuda" jobs/slurm.sh
# With no module system and no venv (a bare test cluster), the caller's PATH is kept as is.

_mnist_hpc_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# module and activate scripts read unset variables: relax the caller's strict mode while
# they run, then restore the caller's -e and -u.
_mnist_hpc_flags="$-"
set +eu

# site: the modules your cluster's PyTorch needs
MODULES="${MODULES:-}"
if [ -n "$MODULES" ]; then
    if command -v module >/dev/null 2>&1; then
        # word splitting is the point: MODULES is a list
        # shellcheck disable=SC2086
        module load $MODULES
    else
        echo "envs/slurm.sh: MODULES='$MODULES' but this node has no 'module' command" >&2
    fi
fi

# site: a shared venv or conda prefix instead of the repo's .venv
_mnist_hpc_venv="${MNIST_HPC_VENV:-$_mnist_hpc_repo/.venv}"
if [ -f "$_mnist_hpc_venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$_mnist_hpc_venv/bin/activate"
fi

case "$_mnist_hpc_flags" in *e*) set -e ;; esac
case "$_mnist_hpc_flags" in *u*) set -u ;; esac
unset _mnist_hpc_repo _mnist_hpc_venv _mnist_hpc_flags
