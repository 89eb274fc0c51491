#!/usr/bin/env bash
# The GPU measurements of tools/RESULTS.md in one script, for an NVIDIA machine with PyTorch (the peer) and
# MLX's CUDA build on PYTHONPATH (pip install "mlx[cuda13]" "mlx-lm" where a registry is reachable).
#   bash tools/gpu_check.sh [OUT_DIR]
# Writes OUT_DIR/*.log and *.json: the bf16 training step vs PyTorch eager and torch.compile at the paper's
# SLM size (121M) and LLM size (759M), what bf16 buys over fp32, and a 300-step paper-slm pretraining on the
# bundled data (throughput and data-wait, not a model). Each part has its own time limit so one slow part
# cannot starve the others.
set -u
OUT=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
run() {  # run NAME SECONDS CMD...: tee the output to OUT/NAME.log, never stop the script
  local name=$1 secs=$2; shift 2
  echo "=== $name (limit ${secs}s): $*" | tee "$OUT/$name.log"
  local t0=$(date +%s)
  timeout "$secs" "$@" 2>&1 | tee -a "$OUT/$name.log" | grep -v -E "it/s|step/s|doc/s" | tail -40
  echo "=== $name: rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.log"
$PY -c "import mlx.core as mx, mlx_lm, torch; print('mlx', mx.__version__, mx.default_device(), '| mlx_lm', mlx_lm.__version__, '| torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.log"
run bench-slm-bf16 170 $PY -m tools.bench --presets slm --methods ab --precision bf16 --batch 8 --seq 1024 \
    --vocab 32000 --rounds 5 --steps 5 --peak-tflops 989 --json "$OUT/bench-slm-bf16.json"
run pretrain-slm 170 $PY -m recipes.pretrain --config recipes/configs/paper-slm.yaml --out /tmp/gpu-run \
    --pretrain.steps 300 --pretrain.eval_every 100 --pretrain.save_every 100 --pretrain.log_every 25 \
    --data.vocab_size 8192
cp /tmp/gpu-run/pretrain/metrics.jsonl "$OUT/pretrain-metrics.jsonl" 2>/dev/null
cp /tmp/gpu-run/pretrain/summary.json "$OUT/pretrain-summary.json" 2>/dev/null
run bench-slm-fp32 80 $PY -m tools.bench --presets slm --methods ab --precision fp32 --batch 8 --seq 1024 \
    --vocab 32000 --rounds 3 --steps 3 --no-torch-compile --json "$OUT/bench-slm-fp32.json"
run bench-llm-bf16 120 $PY -m tools.bench --presets llm --methods ab --precision bf16 --batch 4 --seq 1024 \
    --vocab 32000 --rounds 3 --steps 3 --peak-tflops 989 --json "$OUT/bench-llm-bf16.json"
