"""Backend set-up that must happen before ``mlx.core`` is imported.

On Linux the ``mlx-cpu`` wheel links the netlib *reference* BLAS (~3 GFLOP/s for fp32 matmul).
``libmlx.so`` resolves ``cblas_sgemm`` & co. through the global symbol scope, so an optimized
OpenBLAS loaded with ``RTLD_GLOBAL`` *before* ``mlx.core`` wins (~30x faster; docs/platform.md §1).
``import mlx_pn`` calls :func:`setup_blas` first thing; set ``MLX_PN_BLAS=reference`` to opt out
or ``MLX_PN_BLAS=/path/libopenblas.so.0`` to choose the library.

An OpenBLAS older than the CPU (Debian 12's 0.3.21 on a virtualised Xeon reporting a generic model) does not
recognise it and runs its generic Prescott kernels: 34 instead of 175 GFLOP/s for a 2048 fp32 matmul on one
thread, measured on the project's VM. So, unless the user set ``OPENBLAS_CORETYPE``, :func:`setup_blas` sets it
from the CPU's own feature flags before loading the library (:func:`openblas_coretype`); :func:`blas_core`
says which kernels the library runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
import warnings

# Searched when ctypes.util.find_library finds nothing (no ldconfig cache, e.g. in containers).
_OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)

_state = {"blas": None, "warned": False, "lib": None}

# OpenBLAS's x86-64 kernel families, best first, with the CPU flags each one's kernels execute
_AVX512 = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})
_CORETYPES = (("SkylakeX", _AVX512 | {"avx2", "fma"}), ("Haswell", frozenset({"avx2", "fma"})))
# The vector width each kernel family's kernels use, as openblas_get_corename() names them (lower case): the
# AVX-512 families (Cooperlake and SapphireRapids are SkylakeX's kernels plus bf16 / AMX ones), the AVX2 + FMA
# ones (Zen runs Haswell's kernels), the AVX-only ones; anything else older. A family is "lesser" than another
# only when its level is lower: Cooperlake on a CPU we would give SkylakeX is not lesser.
_KERNEL_LEVEL = {**dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), 3),
                 **dict.fromkeys(("haswell", "zen", "excavator"), 2),
                 **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller"), 1)}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def openblas_coretype(flags: frozenset[str], machine: str = "x86_64") -> str | None:
    """The best OpenBLAS kernel family an x86-64 CPU with these flags runs (None: leave it to OpenBLAS)."""
    if machine not in ("x86_64", "AMD64"):
        return None
    return next((name for name, needs in _CORETYPES if needs <= flags), None)


def kernel_level(core: str | None) -> int:
    """How wide the vector kernels of an OpenBLAS kernel family are: 3 AVX-512, 2 AVX2, 1 AVX, 0 older/unknown."""
    return _KERNEL_LEVEL.get((core or "").lower(), 0)


def lesser_kernels(core: str | None, flags: frozenset[str], machine: str = "x86_64") -> str | None:
    """The family OpenBLAS should run when the ``core`` it runs is narrower than what this CPU executes, else None.

    Equal or wider families (Cooperlake or SapphireRapids where we would pick SkylakeX, Zen for Haswell) are
    fine, and so is a CPU we have no family for."""
    best = openblas_coretype(flags, machine)
    if not best or not core or kernel_level(core) >= kernel_level(best):
        return None
    return best


def _find_openblas() -> str | None:
    choice = os.environ.get("MLX_PN_BLAS", "")
    if choice and choice != "reference":
        return choice
    for path in _OPENBLAS_CANDIDATES:
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("openblas")


def _preloaded_openblas() -> str | None:
    """The OpenBLAS already mapped into this process (LD_PRELOAD or an earlier setup), if any."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libopenblas" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return None


def setup_blas() -> str:
    """Load an optimized BLAS into the global scope before mlx.core; return what is in use.

    Returns one of ``"openblas:<path>"``, ``"platform"`` (macOS / non-Linux: MLX's own
    Accelerate/Metal path) or ``"reference"`` (the slow netlib BLAS the Linux wheel bundles).
    """
    if _state["blas"] is not None:
        return _state["blas"]
    if not sys.platform.startswith("linux"):
        _state["blas"] = "platform"
        return _state["blas"]
    already = _preloaded_openblas()
    if already:
        _state["blas"] = f"openblas:{already}"
        return _state["blas"]
    if os.environ.get("MLX_PN_BLAS") == "reference":
        _state["blas"] = "reference"
        return _state["blas"]
    if "mlx.core" in sys.modules:
        # Too late: libmlx already bound its BLAS symbols to the bundled reference library.
        _state["blas"], _state["late"] = "reference", True
        return _state["blas"]
    path = _find_openblas()
    if path:
        if "OPENBLAS_CORETYPE" not in os.environ:  # the user's choice wins; read once, when the library loads
            core = openblas_coretype(cpu_flags(), platform.machine())
            if core:
                os.environ["OPENBLAS_CORETYPE"] = core
        try:
            _state["lib"] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _state["blas"] = f"openblas:{path}"
            return _state["blas"]
        except OSError:
            pass
    _state["blas"] = "reference"
    return _state["blas"]


def warn_if_slow_blas() -> None:
    """Say once, clearly, when fp32 matmuls on the CPU will run on the reference BLAS, or on OpenBLAS kernels
    older than the CPU (a preloaded library that did not recognise it; a user's OPENBLAS_CORETYPE is kept)."""
    if _state["warned"]:
        return
    # setup_blas sets OPENBLAS_CORETYPE before it loads the library: unset here means preloaded (or no OpenBLAS)
    if (_state["blas"] or "").startswith("openblas:") and "OPENBLAS_CORETYPE" not in os.environ:
        core = blas_core()
        best = lesser_kernels(core, cpu_flags(), platform.machine())
        if best:
            _state["warned"] = True
            warnings.warn(f"mlx_pn: the preloaded OpenBLAS runs its {core} kernels on a CPU that runs {best}'s: "
                          f"fp32 CPU matmuls are up to 5x slower. Fix: add OPENBLAS_CORETYPE={best} to the "
                          f"environment, or drop LD_PRELOAD (import mlx_pn loads OpenBLAS and sets it)",
                          RuntimeWarning, stacklevel=3)
            return
    if _state["blas"] != "reference":
        return
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return  # CUDA build with a GPU: matmuls do not go through the CPU BLAS
    _state["warned"] = True
    if os.environ.get("MLX_PN_BLAS") == "reference":
        reason = "MLX_PN_BLAS=reference"
    elif _state.get("late"):
        reason = "mlx.core was imported before mlx_pn"
    else:
        reason = "no OpenBLAS found"
    warnings.warn(
        f"mlx_pn: running on MLX's bundled reference BLAS ({reason}); fp32 CPU matmuls will be "
        "~30x slower. Fix: `apt-get install libopenblas0-pthread` (tools/setup.sh does it) and "
        "import mlx_pn before mlx, or run with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0.",
        RuntimeWarning,
        stacklevel=3,
    )


def blas_in_use() -> str:
    return _state["blas"] or setup_blas()


def blas_core() -> str | None:
    """The kernels the loaded OpenBLAS runs (openblas_get_corename: 'SkylakeX', 'Haswell', 'Prescott' ...);
    None without an OpenBLAS loaded by setup_blas."""
    lib = _state["lib"]
    blas = _state["blas"] or ""
    if lib is None and blas.startswith("openblas:"):  # preloaded (LD_PRELOAD): the same library, opened again
        try:
            lib = ctypes.CDLL(blas.split(":", 1)[1])
        except OSError:
            return None
    if lib is None:
        return None
    try:
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode().strip()
    except (AttributeError, OSError):
        return None

