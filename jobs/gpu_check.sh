#!/usr/bin/env bash
# Every GPU check and benchmark of this repository, on one GPU node, in a few minutes:
#   1. the GPU tests (pytest -m gpu): graphs against eager, bf16, 2 gloo ranks on one GPU,
#      the refusal of NCCL ranks sharing a GPU, deterministic runs repeating exactly
#   2. python -m mnist_hpc.bench --device cuda (throughput cases with ratios to the
#      notebook's loop, the seed recipe's whole run, time to accuracy) -> $OUT
#   3. the fast preset's whole command, timed, and --deterministic's cost, from metrics.json
#   4. with RECIPE_SEEDS=N (default 0: skipped, it takes minutes more): the resnet and vit
#      presets' whole runs on seeds 0..N-1, each run's test accuracy and time
# Run from anywhere, on the GPU node: bash jobs/gpu_check.sh  (RECIPE_SEEDS=5 bash ... for 4.)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."   # the repo root: tests and data paths hang off it
OUT="${OUT:-bench-gpu.json}"              # where the bench writes its JSON
PYTHON="${PYTHON:-python}"                # the interpreter with torch (a venv's, a module's)
RECIPE_SEEDS="${RECIPE_SEEDS:-0}"         # seeds of step 4 (0: skip it)
RESULTS="$(mktemp -d)"                    # the runs of steps 3 and 4, removed at the end
trap 'rm -rf "$RESULTS"' EXIT

echo "=== 1. GPU tests ==="
PYTHONPATH=. "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider tests/run/test_gpu.py

echo "=== 2. bench --device cuda ==="
"$PYTHON" -m mnist_hpc.bench --device cuda --out "$OUT"

# One run, timed: its whole command's wall time and the figures of its metrics.json.
run_and_summarise() {  # LABEL RUN_PARENT TRAIN_ARGS...
    local label=$1 parent=$2 started ended wall run_dirs summary
    shift 2
    started=$(date +%s.%N)
    "$PYTHON" -m mnist_hpc.train "$@" --results-dir "$parent" > /dev/null
    ended=$(date +%s.%N)
    wall=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
    run_dirs=("$parent"/*)                # the one run directory the run created
    summary=$("$PYTHON" -m mnist_hpc.metrics summary "${run_dirs[0]}")
    echo "$label: command $wall s wall, $summary"
}

echo "=== 3. the fast preset, whole command; --deterministic on and off ==="
for deterministic in no-deterministic deterministic; do
    run_and_summarise "fast, --$deterministic" "$RESULTS/$deterministic" \
        --config fast "--$deterministic"
done

if (( RECIPE_SEEDS > 0 )); then
    echo "=== 4. the resnet and vit presets, seeds 0..$((RECIPE_SEEDS - 1)) ==="
    for config in resnet vit; do
        for ((seed = 0; seed < RECIPE_SEEDS; seed++)); do
            run_and_summarise "$config, seed $seed" "$RESULTS/$config-$seed" \
                --config "$config" --seed "$seed"
        done
    done
fi
