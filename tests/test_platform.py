"""BLAS set-up happens in a fresh interpreter (it must run before mlx.core loads)."""

import os
import subprocess
import sys

import pytest

from mlx_pn.platform import _find_openblas, cpu_flags, kernel_level, lesser_kernels, openblas_coretype

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
    if best and kernel_level(core) < kernel_level(best):  # this OpenBLAS does not know this CPU by itself
        assert f"runs its {core} kernels on a CPU that runs {best}'s" in p.stderr, p.stderr
        assert f"OPENBLAS_CORETYPE={best}" in p.stderr
    else:  # e.g. an AMD Zen 4 whose OpenBLAS picks Cooperlake: as wide as SkylakeX, nothing to fix
        assert "RuntimeWarning" not in p.stderr, p.stderr


# The kernel logic over CPUs as data: (CPU, its flags, the family OpenBLAS detects) -> the family to suggest.
_AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
CPUS = {
    "Intel Skylake-X": _AVX512,
    "Intel Cooperlake": _AVX512 | {"avx512_bf16", "avx512_vnni"},
    "Intel Sapphire Rapids": _AVX512 | {"avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"},
    "AMD Zen 3": _AVX2 | {"vaes", "vpclmulqdq"},
    "AMD Zen 4": _AVX512 | {"avx512_bf16", "avx512_vnni", "avx512vbmi"},
    "Intel Haswell (no AVX-512)": _AVX2,
    "Intel Sandy Bridge (AVX only)": frozenset({"sse4_2", "avx"}),
}


@pytest.mark.parametrize("cpu, detected, suggested", [
    ("Intel Skylake-X", "SkylakeX", None),
    ("Intel Skylake-X", "Haswell", "SkylakeX"),
    ("Intel Skylake-X", "Prescott", "SkylakeX"),     # Debian 12's 0.3.21 on the project's Xeon VM
    ("Intel Cooperlake", "Cooperlake", None),
    ("Intel Cooperlake", "Prescott", "SkylakeX"),
    ("Intel Sapphire Rapids", "SapphireRapids", None),
    ("Intel Sapphire Rapids", "Haswell", "SkylakeX"),
    ("AMD Zen 4", "Cooperlake", None),               # the host this test once failed on
    ("AMD Zen 4", "SkylakeX", None),
    ("AMD Zen 4", "Zen", "SkylakeX"),
    ("AMD Zen 3", "Zen", None),
    ("AMD Zen 3", "Haswell", None),
    ("AMD Zen 3", "Prescott", "Haswell"),
    ("Intel Haswell (no AVX-512)", "Haswell", None),
    ("Intel Haswell (no AVX-512)", "Sandybridge", "Haswell"),
    ("Intel Sandy Bridge (AVX only)", "Sandybridge", None),  # no family of ours: leave it to OpenBLAS
    ("Intel Sandy Bridge (AVX only)", "Prescott", None),
])
def test_lesser_kernels_over_cpus_as_data(cpu, detected, suggested):
    assert lesser_kernels(detected, CPUS[cpu]) == suggested
    assert lesser_kernels(detected, CPUS[cpu], machine="aarch64") is None
    assert lesser_kernels(None, CPUS[cpu]) is None  # no OpenBLAS loaded


def test_kernel_levels_rank_the_families():
    assert kernel_level("SapphireRapids") == kernel_level("Cooperlake") == kernel_level("SKYLAKEX") == 3
    assert kernel_level("Zen") == kernel_level("Haswell") > kernel_level("Sandybridge") > kernel_level("Prescott")
    assert kernel_level("NoSuchCore") == kernel_level(None) == 0
