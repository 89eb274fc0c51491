#!/usr/bin/env bash
# The compare-d128 grid on a GPU machine in one time-boxed go (what docs/compare-d128/ holds), for a machine
# with MLX's CUDA build importable and the grid's data and clusterings prepared beforehand (carried in DATA):
#   bash tools/gpu_grid.sh [SECONDS] [DATA_DIR] [extra recipes.compare flags...]
# Trains for at most SECONDS (default 450) in --grid.jobs processes (default 14), then rebuilds the tables from
# every finished cell (an unfinished cell is simply absent; the same command continues it) and packs the
# results, the logs and every stage's summary.json / results.json / metrics.jsonl (no weights) into
# $OUT/compare-d128.tar.gz.
set -u
SECS=${1:-450}; DATA=${2:-runs/compare-d128/data}; shift 2 2>/dev/null || shift $#
OUT=${OUT:-/tmp/gpu-grid}; mkdir -p "$OUT"
RUN=${RUN:-runs/compare-d128}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
CFG="--config recipes/configs/compare-d128.yaml --out $RUN --data.dir $DATA --grid.jobs ${JOBS:-14}"
$PY -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device())" | tee "$OUT/device.log"
t0=$(date +%s)
timeout "$SECS" $PY -m recipes.compare $CFG "$@" > "$OUT/grid.log" 2>&1
echo "grid: rc $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/device.log"
pkill -f "multiprocessing.spawn" 2>/dev/null; sleep 1
$PY -m recipes.compare $CFG "$@" --report-only > "$OUT/report.log" 2>&1
echo "report: rc $?" | tee -a "$OUT/device.log"
grep -v "it/s\|s/it" "$OUT/grid.log" | tail -25
tar -czf "$OUT/compare-d128.tar.gz" --exclude='*.safetensors' --exclude='*.npz' --exclude='*.npy' \
    --exclude='checkpoint*' --exclude='teacher' --exclude="$DATA" "$RUN" 2>/dev/null
ls -la "$OUT"
