"""BLAS set-up happens in a fresh interpreter (it must run before mlx.core loads)."""

import os
import subprocess
import sys

import pytest

from mlx_pn.platform import _find_openblas, cpu_flags, openblas_coretype

CODE = ("import warnings, sys; warnings.simplefilter('always'); {pre}import mlx_pn; import mlx.core as mx; "
        "print(mlx_pn.BLAS)")
CORE = "from mlx_pn.platform import blas_core; print(blas_core())"


def run(pre="", code=CODE, **env):
    """A fresh interpreter without this one's LD_PRELOAD or OPENBLAS_CORETYPE (import mlx_pn set it here)."""
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OPENBLAS_CORETYPE")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code.format(pre=pre)], capture_output=True, text=True, env=e,
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


def test_openblas_kernel_family_from_the_cpu_flags():
    avx2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
    avx512 = avx2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert openblas_coretype(avx512) == "SkylakeX"
    assert openblas_coretype(avx512 - {"avx512vl"}) == "Haswell"  # SkylakeX's kernels use AVX-512VL
    assert openblas_coretype(avx2) == "Haswell"
    assert openblas_coretype(avx2 - {"fma"}) is None and openblas_coretype(frozenset()) is None
    assert openblas_coretype(avx512, machine="aarch64") is None


linux_openblas = pytest.mark.skipif(not (sys.platform.startswith("linux") and _find_openblas()),
                                    reason="needs Linux with OpenBLAS (tools/setup.sh installs it; CI has it)")


@linux_openblas
def test_openblas_runs_the_kernels_the_cpu_supports():
    """An OpenBLAS older than the CPU (Debian 12's 0.3.21 on this project's Xeon VM) ran its generic Prescott
    kernels, 5x slower for fp32 matmuls; import mlx_pn sets OPENBLAS_CORETYPE from the CPU flags first."""
    best = openblas_coretype(cpu_flags())
    p = run(code=CODE + "; " + CORE)
    core = p.stdout.split()[-1]
    if best:
        assert core == best, p.stdout + p.stderr
    assert "RuntimeWarning" not in p.stderr, p.stderr


@linux_openblas
def test_a_users_openblas_coretype_is_kept():
    p = run(code=CODE + "; " + CORE, OPENBLAS_CORETYPE="Prescott")
    assert p.stdout.split()[-1] == "Prescott" and "RuntimeWarning" not in p.stderr, p.stdout + p.stderr


@linux_openblas
def test_a_preloaded_openblas_on_lesser_kernels_is_named_with_the_fix():
    best = openblas_coretype(cpu_flags())
    p = run(code=CODE + "; " + CORE, LD_PRELOAD=_find_openblas())
    core = p.stdout.split()[-1]
    if best and core.lower() != best.lower():  # this OpenBLAS does not know this CPU by itself
        assert f"runs its {core} kernels on a CPU that runs {best}'s" in p.stderr, p.stderr
        assert f"OPENBLAS_CORETYPE={best}" in p.stderr
    else:
        assert "RuntimeWarning" not in p.stderr, p.stderr
