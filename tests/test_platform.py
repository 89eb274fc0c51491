"""BLAS set-up happens in a fresh interpreter (it must run before mlx.core loads)."""

import os
import subprocess
import sys

import pytest

from mlx_pn.platform import _find_openblas

CODE = ("import warnings, sys; warnings.simplefilter('always'); {pre}import mlx_pn; import mlx.core as mx; "
        "print(mlx_pn.BLAS)")


def run(pre="", **env):
    e = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    e.update(env)
    return subprocess.run([sys.executable, "-c", CODE.format(pre=pre)], capture_output=True, text=True, env=e,
                          timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_optimized_blas_loaded_when_available():
    p = run()
    if _find_openblas():  # tools/setup.sh installs it; CI must take this branch
        assert p.stdout.strip().startswith("openblas:"), p.stdout + p.stderr
        assert "reference BLAS" not in p.stderr
    else:
        assert p.stdout.strip() == "reference" and "reference BLAS" in p.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_warns_once_when_mlx_imported_first():
    p = run(pre="import mlx.core; ")
    assert p.stdout.strip() == "reference"
    assert p.stderr.count("reference BLAS") == 1 and "imported before mlx_pn" in p.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_opt_out_is_respected():
    p = run(MLX_PN_BLAS="reference")
    assert p.stdout.strip() == "reference" and "MLX_PN_BLAS=reference" in p.stderr
