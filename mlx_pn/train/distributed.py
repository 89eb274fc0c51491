"""Data-parallel training through ``mx.distributed``: who am I, what is my share, and the few collective
operations the loop needs.

Launch any recipe with ``mlx.launch`` and every process joins one group (ring backend on Macs/CPUs over TCP,
NCCL on NVIDIA GPUs); without a launcher the group has one member and nothing here changes behaviour:

    mlx.launch --backend ring -n 2 --python .venv/bin/python -m recipes.pretrain --config ...   # 2 ranks, localhost

The data-parallel contract (mlx_pn.train.loop): ``batch_size`` stays the *global* batch; rank r of n reads rows
[r*B/n, (r+1)*B/n) of every micro-batch (batch i is a pure function of i, so no rank needs another's data), the
step averages gradients (and the logged loss) over ranks before the optimizer update, so every rank applies the
same update, equal to the single-process update on the whole global batch up to fp32 summation order. Rank 0
alone writes metrics, checkpoints, final weights and the progress bar; on resume it reads the checkpoint and
broadcasts weights, optimizer state and the loop's TrainState to the others (no shared filesystem needed).

Work that is embarrassingly parallel (the slm-mix experts) uses :func:`my_share` instead: each rank trains its
own experts with its own single-process loop (``train(..., group=SOLO)``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Sequence, TypeVar

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

T = TypeVar("T")

# Passed as `group` to train()/make_step: run single-process even when launched with several ranks (my_share).
SOLO = "solo"

_world: list = []


def world() -> tuple[mx.distributed.Group | None, int, int]:
    """-> (group or None, rank, size). None and (0, 1) when this process was not launched as one of several
    (no launcher, or a single rank); the group is initialised once per process."""
    if not _world:
        group = None
        if mx.distributed.is_available() and _launched():
            g = mx.distributed.init(strict=False)
            if g.size() > 1:
                group = g
        _world.append(group)
    group = _world[0]
    return (group, group.rank(), group.size()) if group is not None else (None, 0, 1)


def _launched() -> bool:
    # mlx.launch sets one of these for every backend (ring: MLX_HOSTFILE + MLX_RANK; nccl: MLX_WORLD_SIZE;
    # mpi: OMPI_* / PMI_*). Without them init() would still return a size-1 group, but this avoids touching
    # the distributed machinery at all in the common single-process case.
    keys = ("MLX_RANK", "MLX_HOSTFILE", "MLX_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MLX_IBV_DEVICES",
            "MLX_JACCL_COORDINATOR")
    return any(os.environ.get(k) for k in keys)


# how MLX's backends word a collective that failed because another rank went away: "[ring] connection to a peer
# was lost", "[nccl] ...", "[mpi] ..." (a RuntimeError raised where the collective is evaluated)
_BACKEND_ERROR = re.compile(r"^\[(ring|nccl|mpi|jaccl)\] ")


def lost_peer(e: BaseException) -> str | None:
    """One line for a collective that failed because another rank stopped (this rank named, where training was,
    what to do); None for any other error."""
    from mlx_pn import interrupt

    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if not isinstance(e, RuntimeError) or not _BACKEND_ERROR.match(text):
        return None
    r, n = interrupt.rank()
    at = interrupt.where()
    return (f"rank {r} of {n} lost the data-parallel group ({text}): another rank stopped or its host became "
            f"unreachable{'; ' + at if at else ''}; rerun the same launch command on every host to resume from "
            f"rank 0's last checkpoint")


def resolve(group) -> tuple[mx.distributed.Group | None, int, int]:
    """A train()/make_step `group` argument -> (group or None, rank, size): None = the launched world,
    SOLO = this process alone, or an explicit mx.distributed.Group."""
    if group is None:
        return world()
    if group == SOLO:
        return None, 0, 1
    return (group, group.rank(), group.size()) if group.size() > 1 else (None, 0, 1)


def is_main() -> bool:
    """True on rank 0 (and in every single-process run): the process that logs, saves and prints."""
    return world()[1] == 0


def my_share(items: Sequence[T]) -> list[T]:
    """This rank's items of a list of independent jobs, round-robin: rank r of n gets items r, r+n, r+2n, ...
    E.g. the slm-mix experts: ``for i in my_share(range(k)): train expert i`` (each with group=SOLO).
    Single process: all items."""
    _, r, n = world()
    return list(items)[r::n]


def average(tree, group) -> object:
    """Mean over the ranks of a tree of arrays (gradients: one all-reduce per ~32 MB bucket)."""
    return nn.average_gradients(tree, group) if group is not None else tree


def mean_scalar(x: mx.array, group) -> mx.array:
    return mx.distributed.all_sum(x, group=group) / group.size() if group is not None else x


def broadcast(tree, group, root: int = 0):
    """Rank `root`'s values of a tree of arrays on every rank (an all-sum with the others' values zeroed).

    The trees must hold the same names and shapes on every rank, in any order: the collectives run in sorted
    name order, one evaluated after the other, because a tree restored from a checkpoint (rank 0 resuming)
    lists its leaves in another order than a freshly initialised one (the other ranks), and collectives
    issued in different orders never complete."""
    if group is None:
        return tree
    mine = group.rank() == root
    flat = tree_flatten(tree)
    summed = {}
    for k, v in sorted(flat, key=lambda kv: kv[0]):
        summed[k] = mx.distributed.all_sum(v if mine else mx.zeros_like(v), group=group).astype(v.dtype)
        mx.eval(summed[k])
    return tree_unflatten([(k, summed[k]) for k, _ in flat])


def broadcast_floats(values: Sequence[float], group, root: int = 0) -> list[float]:
    """A few Python numbers from rank `root` (e.g. a validation NLL) -> the same list on every rank, as fp32."""
    if group is None:
        return list(values)
    a = mx.array([float(v) for v in values], dtype=mx.float32) if group.rank() == root else \
        mx.zeros((len(values),), dtype=mx.float32)
    return mx.distributed.all_sum(a, group=group).tolist()


def broadcast_json(value, group, root: int = 0):
    """A JSON-able value (e.g. the loop's TrainState as a dict) from rank `root` -> the same value on every rank.

    Sent as its UTF-8 bytes in a uint8 array (first its length), so integers and floats arrive exactly; on
    `root` too the value goes through JSON, so every rank holds the same numbers."""
    if group is None:
        return value
    mine = group.rank() == root
    data = json.dumps(value).encode() if mine else b""
    n = int(broadcast({"n": mx.array([len(data)], dtype=mx.int32)}, group, root)["n"].item())
    buf = mx.array(np.frombuffer(data, dtype=np.uint8)) if mine else mx.zeros((n,), dtype=mx.uint8)
    got = broadcast({"b": buf}, group, root)["b"]  # (n,) uint8: the others add zeros
    return json.loads(np.array(got).tobytes().decode())


def barrier(group) -> None:
    """Wait until every rank gets here."""
    if group is not None:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group))


def shard_rows(batch, rank: int, size: int):
    """Rows [rank*B/size, (rank+1)*B/size) of every micro-batch of a loop batch: tokens (A, B, L + 1) or a tuple
    (tokens, *extras); extras shaped (A, B, ...) are cut the same way, per-micro-batch extras (A,) are kept."""
    if size == 1:
        return batch
    arrays = batch if isinstance(batch, tuple) else (batch,)
    B = arrays[0].shape[1]
    if B % size:
        raise ValueError(f"batch_size={B} is not divisible by the {size} data-parallel ranks; pick a multiple")
    lo, hi = rank * B // size, (rank + 1) * B // size
    out = tuple(a[:, lo:hi] if a.ndim >= 2 and a.shape[1] == B else a for a in arrays)
    return out if isinstance(batch, tuple) else out[0]


def sharded_source(batches, micro_batches: int, rank: int, size: int):
    """-> f(step) giving this rank's shard of the global batch of `step`. Sources whose batch() takes `shard`
    (PackedBatches, ClusterGroupedBatches) read only their rows; any other source is sliced."""
    if size == 1:
        return lambda i: batches.batch(i, micro_batches)
    try:
        import inspect

        takes_shard = "shard" in inspect.signature(batches.batch).parameters
    except (TypeError, ValueError):
        takes_shard = False
    if takes_shard:
        return lambda i: batches.batch(i, micro_batches, shard=(rank, size))
    return lambda i: shard_rows(batches.batch(i, micro_batches), rank, size)


