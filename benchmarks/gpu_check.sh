#!/usr/bin/env bash
# The device check for a GPU machine (no install: its python3 has torch and the other packages).
# Runs the engine's equivalence tests on the GPU, times the full default reproduction end to end
# on the GPU, then the speed benchmark at 10 and 200 batched seeds. Writes everything under $OUT.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_engine.py -k cuda 2>&1 | tail -3 | tee "$OUT/equivalence.txt"
TIMEFORMAT="full default reproduction, end to end (python start to report written): %R s"
{ time python3 -m digitcmp reproduce --device cuda --db "$OUT/gpu.sqlite" --out "$OUT/report" --no-progress ; } 2>&1 \
    | tee "$OUT/reproduce.txt"
if ! grep -q "runs planned" "$OUT/reproduce.txt"; then  # fall back to one run at a time on the GPU
    { time python3 -m digitcmp reproduce --device cuda --engine single --db "$OUT/gpu_single.sqlite" \
        --out "$OUT/report_single" --no-progress ; } 2>&1 | tee "$OUT/reproduce_single.txt"
fi
# Run it again on the filled store: what remains is start-up, the store and the report.
{ time python3 -m digitcmp reproduce --device cuda --db "$OUT/gpu.sqlite" --out "$OUT/report" --no-progress ; } 2>&1 \
    | tee "$OUT/reproduce_again.txt"
python3 benchmarks/speed.py --device cuda --reps 2 --seeds 10 200 2>"$OUT/speed_progress.txt" | tee "$OUT/speed_gpu.txt"
