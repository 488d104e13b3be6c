#!/usr/bin/env bash
# Every GPU check and benchmark of this repository, on one GPU node, in a few minutes:
#   1. the GPU tests (pytest -m gpu): graphs against eager, bf16, 2 gloo ranks on one GPU,
#      the refusal of NCCL ranks sharing a GPU, deterministic runs repeating exactly
#   2. python -m mnist_hpc.bench --device cuda (throughput cases with ratios to the
#      notebook's loop, the seed recipe's whole run, time to accuracy) -> $OUT
#   3. the fast preset's whole command, timed, and --deterministic's cost, from metrics.json
# Run from anywhere, on the GPU node: bash jobs/gpu_check.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."   # the repo root: tests and data paths hang off it
OUT="${OUT:-bench-gpu.json}"              # where the bench writes its JSON
PYTHON="${PYTHON:-python}"                # the interpreter with torch (a venv's, a module's)
RESULTS="$(mktemp -d)"                    # the runs of step 3, removed at the end
trap 'rm -rf "$RESULTS"' EXIT

echo "=== 1. GPU tests ==="
PYTHONPATH=. "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu.py

echo "=== 2. bench --device cuda ==="
"$PYTHON" -m mnist_hpc.bench --device cuda --out "$OUT"

echo "=== 3. the fast preset, whole command; --deterministic on and off ==="
for deterministic in false true; do
    started=$(date +%s.%N)
    "$PYTHON" -m mnist_hpc.train --config fast --deterministic "$deterministic" \
        --results-dir "$RESULTS/$deterministic" > /dev/null
    ended=$(date +%s.%N)
    "$PYTHON" - "$RESULTS/$deterministic" "$started" "$ended" "$deterministic" <<'PY'
import json, pathlib, sys
run_dir = next(pathlib.Path(sys.argv[1]).iterdir())
m = json.loads((run_dir / "metrics.json").read_text())
f, b = m["final"], m["batch"]
print(f"fast, deterministic {sys.argv[4]}: command {float(sys.argv[3]) - float(sys.argv[2]):.1f} s"
      f" wall, startup_s {f['startup_s']:.2f}, warmup_s {f['warmup_s']:.2f}, train_s "
      f"{f['train_s']:.2f} (epochs: {', '.join('%.2f' % e['train_s'] for e in m['epochs'])}), "
      f"test {f['test_acc']:.2f} %, {b['precision']}, cuda_graphs {b['cuda_graphs']}")
PY
done
