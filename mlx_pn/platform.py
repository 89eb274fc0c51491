"""Backend set-up that must happen before ``mlx.core`` is imported.

On Linux the ``mlx-cpu`` wheel links the netlib *reference* BLAS (~3 GFLOP/s for fp32 matmul).
``libmlx.so`` resolves ``cblas_sgemm`` & co. through the global symbol scope, so an optimized
OpenBLAS loaded with ``RTLD_GLOBAL`` *before* ``mlx.core`` wins (~30x faster; mlx-notes.md §7).
``import mlx_pn`` calls :func:`setup_blas` first thing; set ``MLX_PN_BLAS=reference`` to opt out
or ``MLX_PN_BLAS=/path/libopenblas.so.0`` to choose the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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

_state = {"blas": None, "warned": False}


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
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _state["blas"] = f"openblas:{path}"
            return _state["blas"]
        except OSError:
            pass
    _state["blas"] = "reference"
    return _state["blas"]


def warn_if_slow_blas() -> None:
    """Say once, clearly, when fp32 matmuls on the CPU will run on the reference BLAS."""
    if _state["warned"] or _state["blas"] != "reference":
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

