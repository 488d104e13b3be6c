# shellcheck shell=bash
# What jobs/slurm.sh and jobs/slurm_torchrun.sh share, sourced from the repo root:
#   slurm_job_setup   check the job, load the environment, read the knobs into variables
#   preflight CMD...  with PREFLIGHT=1, run the doctor first; a failed check ends the job
#                     (from jobs/preflight.sh, sourced here)
#   run_step CMD...   run the job step with preemption handling, then exit with its status
#
# Preemption: Slurm sends SIGUSR1 to the batch shell before the time limit
# (--signal=B:USR1@120). run_step forwards it to srun, which forwards it to its tasks (or, if
# FORWARD_USR1_AS names another signal, has Slurm send that one to the tasks); the trainer
# writes a checkpoint and exits 75; run_step then requeues the job (at most MAX_RESTARTS
# times), which starts again under the same job id and resumes the run directory
# (--resume auto). `scancel --signal=USR1 --batch <jobid>` does the same by hand.
# SIGTERM (scancel, or preemption with PreemptMode=REQUEUE, where Slurm requeues by itself)
# is forwarded too but never leads to a requeue from here: a cancelled job stays cancelled.

die() {
    echo "slurm job: error: $*" >&2
    exit 2
}

# shellcheck source=jobs/preflight.sh
source jobs/preflight.sh

# Sets REPO CONFIG RESULTS_DIR RUN_ID CPU_ONLY PREFLIGHT, the array extra_args (TRAIN_ARGS)
# and the array train_args: every trainer flag, which the calling template passes to the
# trainer (and to the doctor, which takes the same flags).
# shellcheck disable=SC2034  # the variables are the interface to the caller
slurm_job_setup() {
    : "${SLURM_JOB_ID:?is not set: submit this script with sbatch}"
    # Slurm runs a spooled copy of the script; the working directory is the repo
    if [ ! -d mnist_hpc ] || [ ! -f envs/slurm.sh ]; then
        die "$PWD is not the mnist_hpc repo: sbatch from the repo root or pass --chdir=<repo>"
    fi
    REPO="$PWD"
    # shellcheck source=envs/slurm.sh
    source envs/slurm.sh

    CONFIG="${CONFIG:-default}"
    RESULTS_DIR="${RESULTS_DIR:-$REPO/results}"
    RUN_ID="${RUN_ID:-slurm-$SLURM_JOB_ID}"
    # NCCL flight recorder: on a collective timeout each rank dumps its last collectives to
    # <run>/ranks/nccl-trace-rank-N (README "Seeing inside a run" says how to read them);
    # the trainer makes ranks/ as it starts, so a job stopped before training leaves no run
    export TORCH_NCCL_DUMP_ON_TIMEOUT="${TORCH_NCCL_DUMP_ON_TIMEOUT:-1}"
    export TORCH_FR_BUFFER_SIZE="${TORCH_FR_BUFFER_SIZE:-2000}"
    export TORCH_FR_DUMP_TEMP_FILE="$RESULTS_DIR/$RUN_ID/ranks/nccl-trace-rank-"
    CPU_ONLY="${CPU_ONLY:-0}"
    preflight_knob
    epochs_args=()
    if [ -n "${EPOCHS:-}" ]; then
        epochs_args=(--epochs "$EPOCHS")
    fi
    device_args=()
    if [ "$CPU_ONLY" = 1 ]; then
        device_args=(--device cpu --backend gloo)
    fi
    # split on whitespace only: quotes, globs and $(...) in TRAIN_ARGS stay literal text
    read -r -a extra_args <<<"${TRAIN_ARGS:-}"
    train_args=(
        --config "$CONFIG"
        "${epochs_args[@]}"
        "${device_args[@]}"
        --results-dir "$RESULTS_DIR"
        --run-id "$RUN_ID"
        --resume auto
        "${extra_args[@]}"
    )
}

# The resolved settings, first in the job log; extra "name value" lines come as arguments.
print_header() {
    local title="$1"
    shift
    echo "=== $title: job $SLURM_JOB_ID, attempt $((${SLURM_RESTART_COUNT:-0} + 1)) ($(date -Is)) ==="
    printf '%-17s %s\n' \
        cluster "${SLURM_CLUSTER_NAME:-?}, partition ${SLURM_JOB_PARTITION:-?}" \
        workdir "$REPO" \
        nodes "$SLURM_JOB_NUM_NODES ($SLURM_JOB_NODELIST)" \
        devices "$(if [ "$CPU_ONLY" = 1 ]; then echo "CPU only"; else echo "GPUs per node: ${SLURM_GPUS_PER_NODE:-none}"; fi)" \
        "$@" \
        python "$(command -v python)" \
        config "$CONFIG" \
        epochs "${EPOCHS:-preset}" \
        "extra args" "${extra_args[*]:-none}" \
        preflight "$(if [ "$PREFLIGHT" = 1 ]; then echo "the doctor first"; else echo off; fi)" \
        "run directory" "$RESULTS_DIR/$RUN_ID (resumed if it holds a checkpoint)"
}

# The trainer's own record of how this attempt ended: metrics.json's status, if rank 0 wrote
# it during this attempt (a file left by the attempt before says nothing about this one).
_run_status() {
    local metrics="$RESULTS_DIR/$RUN_ID/metrics.json"
    if [ -f "$metrics" ] && [ "$(stat -c %Y "$metrics")" -ge "$_attempt_started" ]; then
        python -m mnist_hpc.metrics status "$RESULTS_DIR/$RUN_ID" 2>/dev/null || true
    fi
}

_step_pid=""
_terminated=0
_interrupted=0
# shellcheck disable=SC2317  # reached through the traps set in run_step
_forward() {
    _interrupted=1
    if [ "$1" = TERM ]; then
        _terminated=1
    fi
    if [ "$1" = USR1 ] && [ "${FORWARD_USR1_AS:-USR1}" != USR1 ]; then
        # srun takes SIGTERM as "cancel the step" (SIGKILL after KillWait, no time for a
        # checkpoint): have Slurm deliver the signal to the step's tasks instead
        echo "slurm job: SIGUSR1 received, sending SIG$FORWARD_USR1_AS to the tasks" >&2
        scancel --signal="$FORWARD_USR1_AS" "$SLURM_JOB_ID" || true
    elif [ -n "$_step_pid" ]; then
        echo "slurm job: SIG$1 received, forwarding it to srun and the tasks" >&2
        kill "-$1" "$_step_pid" 2>/dev/null || true
    fi
}

# Run the step in the background (bash runs a trap only between commands, and `wait` is one
# it can interrupt), forward signals to it, requeue after a checkpoint, exit with its status.
run_step() {
    _attempt_started="$(date +%s)"
    trap '_forward USR1' USR1
    trap '_forward TERM' TERM
    "$@" &
    _step_pid=$!

    local status
    # wait returns early (status > 128) when a trapped signal arrives: wait for the step itself
    while :; do
        _interrupted=0
        status=0
        wait "$_step_pid" || status=$?
        if [ "$_interrupted" = 0 ]; then
            break
        fi
    done

    # 75 means "checkpointed, run me again". With --kill-on-bad-exit, the first rank to exit
    # 75 gets the others killed (SIGTERM), and srun may then report 143 instead: the run's
    # own status decides.
    if [ "$status" != 0 ] && [ "$status" != 75 ] && [ "$(_run_status)" = preempted ]; then
        echo "slurm job: the step exited $status after the run stopped with a checkpoint;" \
            "treating it as 75" >&2
        status=75
    fi

    case "$status" in
        0) echo "=== done: $RESULTS_DIR/$RUN_ID ===" ;;
        75)
            if [ "$_terminated" = 1 ]; then
                echo "=== cancelled after a checkpoint; resume with --export=ALL,RUN_ID=$RUN_ID ==="
            elif [ "${SLURM_RESTART_COUNT:-0}" -ge "${MAX_RESTARTS:-20}" ]; then
                # a run that stops without progress would otherwise requeue forever
                echo "=== stopped early again after ${SLURM_RESTART_COUNT} restarts (MAX_RESTARTS);" \
                    "not requeueing: resume with --export=ALL,RUN_ID=$RUN_ID ==="
            else
                echo "=== stopped early with a checkpoint: requeueing job $SLURM_JOB_ID ==="
                # ends this attempt at once; the next one resumes from the checkpoint
                scontrol requeue "$SLURM_JOB_ID" ||
                    echo "slurm job: requeue refused; resume with --export=ALL,RUN_ID=$RUN_ID" >&2
            fi
            ;;
        *) echo "=== failed with exit code $status ===" ;;
    esac
    exit "$status"
}
