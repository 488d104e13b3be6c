# shellcheck shell=bash
# What every job template shares (jobs/polaris_ddp.pbs, and jobs/slurm.sh and
# jobs/slurm_torchrun.sh through jobs/slurm_lib.sh), sourced from the repo root:
#   job_args RUN_ID [FLAG...]   read the knobs (CONFIG EPOCHS TRAIN_ARGS RESULTS_DIR RUN_ID
#                               PREFLIGHT GRID), point the NCCL flight recorder into the run, and
#                               build train_args: every trainer flag, FLAGs among them;
#                               RUN_ID is the default run directory name
#   job_header TITLE [NAME VALUE]...   the resolved settings, first in the job log
#   preflight CMD...            with PREFLIGHT=1, run CMD (the doctor under the training
#                               step's own launcher) first; a failed check ends the job
#   job_report STATUS STOPPED   the log's last line for the trainer's exit status; STOPPED
#                               says how a run stopped with a checkpoint (75) goes on
#   job_exit STATUS STOPPED     job_report, then exit with STATUS

# Sets CONFIG RESULTS_DIR RUN_ID PREFLIGHT, the arrays extra_args (TRAIN_ARGS) and grid_args
# (GRID's point for this array task) and the array train_args, which the template passes to
# the trainer (and to the doctor: same flags).
# shellcheck disable=SC2034  # the variables are the interface to the caller
job_args() {
    local run_id_default="$1"
    shift
    CONFIG="${CONFIG:-default}"
    RESULTS_DIR="${RESULTS_DIR:-$PWD/results}"
    RUN_ID="${RUN_ID:-$run_id_default}"
    PREFLIGHT="${PREFLIGHT:-0}"
    if [ "$PREFLIGHT" != 0 ] && [ "$PREFLIGHT" != 1 ]; then
        echo "job: error: PREFLIGHT=$PREFLIGHT: use 1 (run python -m mnist_hpc.doctor" \
            "before training) or 0" >&2
        exit 2
    fi
    # NCCL flight recorder: on a collective timeout each rank dumps its last collectives to
    # <run>/ranks/nccl-trace-rank-N (docs/observability.md says how to read them);
    # the trainer makes ranks/ as it starts, so a job stopped before training leaves no run
    export TORCH_NCCL_DUMP_ON_TIMEOUT="${TORCH_NCCL_DUMP_ON_TIMEOUT:-1}"
    export TORCH_FR_BUFFER_SIZE="${TORCH_FR_BUFFER_SIZE:-2000}"
    export TORCH_FR_DUMP_TEMP_FILE="$RESULTS_DIR/$RUN_ID/ranks/nccl-trace-rank-"
    local epochs_args=()
    if [ -n "${EPOCHS:-}" ]; then
        epochs_args=(--epochs "$EPOCHS")
    fi
    # split on whitespace only: quotes, globs and $(...) in TRAIN_ARGS stay literal text
    read -r -a extra_args <<<"${TRAIN_ARGS:-}"
    # GRID=<yaml>: a job array, one grid point per array task (python -m mnist_hpc.grid)
    grid_args=()
    if [ -n "${GRID:-}" ]; then
        grid_index="${SLURM_ARRAY_TASK_ID:-${PBS_ARRAY_INDEX:-}}"
        if [ -z "$grid_index" ]; then
            echo "job: error: GRID=$GRID trains one point per array task: submit with" \
                "sbatch --array=0-<points-1> (PBS: qsub -J 0-<points-1>);" \
                "python -m mnist_hpc.grid show $GRID prints the line" >&2
            exit 2
        fi
        local point
        point="$(python -m mnist_hpc.grid flags "$GRID" "$grid_index")" || exit 2
        mapfile -t grid_args <<<"$point"
    fi
    train_args=(
        --config "$CONFIG"
        "${epochs_args[@]}"
        "$@"
        --results-dir "$RESULTS_DIR"
        --run-id "$RUN_ID"
        --resume auto
        "${extra_args[@]}"
        "${grid_args[@]}"
    )
}

# The template's own "name value" lines come as arguments, the shared ones after them.
job_header() {
    local title="$1"
    shift
    echo "=== $title ($(date -Is)) ==="
    printf '%-17s %s\n' \
        "$@" \
        python "$(command -v python)" \
        config "$CONFIG" \
        epochs "${EPOCHS:-preset}" \
        "extra args" "${extra_args[*]:-none}" \
        grid "${GRID:-none}${GRID:+, point $grid_index: ${grid_args[*]}}" \
        preflight "$(if [ "$PREFLIGHT" = 1 ]; then echo "the doctor first"; else echo off; fi)" \
        "run directory" "$RESULTS_DIR/$RUN_ID (resumed if it holds a checkpoint)"
}

# PREFLIGHT=1: a wrong launch, a GPU shared by two ranks, missing data or mismatched software
# on a node stop the job before any training.
preflight() {
    if [ "$PREFLIGHT" != 1 ]; then
        return 0
    fi
    echo "=== preflight: python -m mnist_hpc.doctor under the job's launcher ==="
    local status=0
    "$@" || status=$?
    if [ "$status" != 0 ]; then
        echo "=== preflight failed with exit code $status: not training (the doctor's" \
            "report above names each problem and its fix) ==="
        exit "$status"
    fi
}

job_report() {
    case "$1" in
        0) echo "=== done: $RESULTS_DIR/$RUN_ID ===" ;;
        75) echo "=== $2 ===" ;;
        *) echo "=== failed with exit code $1 ===" ;;
    esac
}

job_exit() {
    job_report "$@"
    exit "$1"
}
