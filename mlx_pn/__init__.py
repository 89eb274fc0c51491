"""mlx-pn: small specialized language models on MLX (projected networks and friends).

Importing this package first sets up an optimized BLAS on Linux (see :mod:`mlx_pn.platform`),
so ``import mlx_pn`` must come before ``import mlx.core`` in scripts that train on a CPU.
"""

from mlx_pn.platform import setup_blas as _setup_blas

BLAS = _setup_blas()

from mlx_pn.platform import warn_if_slow_blas as _warn_if_slow_blas  # noqa: E402

_warn_if_slow_blas()

__version__ = "0.1.0"
