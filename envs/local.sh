#!/usr/bin/env bash
# Local set-up for a laptop, a workstation or CI: a venv in the repo with pinned packages,
# then one action. Re-running it is cheap: packages are reinstalled only when
# envs/requirements.txt changes.
#
#   bash envs/local.sh train [TRAIN ARGS...]   set up, then python -m mnist_hpc.train
#   bash envs/local.sh test [PYTEST ARGS...]   set up, then the test suite (tests/unit: the fast tier)
#   bash envs/local.sh setup                   set up only
#   source envs/local.sh                       set up and activate in this shell
#
# Knobs: PYTHON (interpreter for the venv, default python3.11 or python3), VENV (default
# <repo>/.venv), TEST_WORKERS (test processes, default one more than the cores),
# MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ (glibc's, default 256 MB each, below).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
REQUIREMENTS="$REPO/envs/requirements.txt"
STAMP="$VENV/.mnist_hpc-requirements"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "Creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    # the stamp holds the requirements last installed: skip pip when nothing changed
    if ! cmp -s "$REQUIREMENTS" "$STAMP"; then
        echo "Installing packages into $VENV (torch is a large download: a few minutes)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
        "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
        "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$REPO"
        cp "$REQUIREMENTS" "$STAMP"
    fi
    # mpich's mpiexec and torchrun live in the venv's bin
    export PATH="$VENV/bin:$PATH"
    # glibc hands every freed block over 32 MB back to the kernel, and a CPU step whose
    # activations are larger faults them back in page by page, every step; raised thresholds
    # keep them in the heap (python -m mnist_hpc.bench --only allocator measures both ways;
    # PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for the same reason)
    export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-268435456}"
    export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-268435456}"
    # bytecode for the package and the tests' helpers, even where PYTHONDONTWRITEBYTECODE is
    # set: without it every process (each rank, each trainer a test starts) compiles their
    # 50-odd modules again, 0.3 s of CPU a trainer. A file that does not compile fails where
    # it is imported, with Python's own message.
    "$VENV/bin/python" -m compileall -q "$REPO/mnist_hpc" "$REPO/tests" >/dev/null || true
}

# Sourced: set up and leave the venv active in the caller's shell.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    set +euo pipefail
    setup
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    return 0
fi

action="${1:-train}"
shift || true
setup
cd "$REPO"
case "$action" in
    train) exec "$VENV/bin/python" -m mnist_hpc.train "$@" ;;
    # TEST_WORKERS processes share the tests (pytest-xdist; tests/conftest.py says how).
    # One more worker than cores lets tests that wait (timeouts, Slurm requeues) overlap with
    # tests that compute; more only make the processes fight over the cores (the whole suite
    # on a 2-core AMD EPYC CPU: 2 workers 9 min 40 s, 3 workers 8 min 59 s, 4 workers 9 min
    # 39 s; docs/development.md).
    # TEST_WORKERS=0: one process.
    test) exec "$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-$(($(nproc) + 1))}" "$@" ;;
    setup) echo "Ready: source $VENV/bin/activate" ;;
    *) echo "usage: bash envs/local.sh train|test|setup [ARGS...]" >&2; exit 2 ;;
esac
