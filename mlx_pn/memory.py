"""Will it fit? A memory estimate of a model and of its training step, checked before the memory is taken.

An MLX step that does not fit does not raise: it segfaults (OpenBLAS), or the machine swaps for minutes. So the
model's size is checked before its weights are allocated (mlx_pn.models.build.build_model) and the training step's
before the optimizer state is (mlx_pn.train.loop): refused with the numbers when the estimate is over
REFUSE_FRACTION of the memory available, a warning when over WARN_FRACTION.

The estimate (float32, 4 bytes a number; B rows of L tokens per micro-batch, N layers, d = hidden_size,
f = intermediate_size, H heads, V vocabulary, P parameters, P_t of them trained):
    weights 4 P + gradients 4 P_t + AdamW moments 8 P_t
    activations kept for the backward pass: 4 B L N (10 d + 4 f + 2 H L)   (norms, q/k/v/o, rope, attention
        scores and probabilities (the CPU attention is not fused), the SwiGLU's gate/up/product, residuals)
    logits: 4 B L V x 3   (the logits, their softmax and their gradient)
    (a bf16/fp16 step, train.precision: 2 bytes an activation; on a GPU the fused attention keeps no scores)
Available memory: the GPU's memory where MLX runs on one (mx.device_info()), else MemAvailable of /proc/meminfo
(capped by a cgroup limit: containers) on Linux, `sysctl hw.memsize` on macOS. tests/test_hostile_input.py checks
the estimate against MLX's measured peak of a real step.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

from mlx_pn.config import ConfigError

REFUSE_FRACTION = 0.9
WARN_FRACTION = 0.6
BYTES = 4  # float32: weights, optimizer state and (on a CPU) activations


class OutOfMemoryError(ConfigError):
    """The model or its training step cannot fit in this machine's memory; the message has the numbers and the fix."""


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def _cgroup_left() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, then v1); None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            lim = Path(limit).read_text().strip()
            if lim == "max" or int(lim) >= 1 << 60:
                return None
            return max(0, int(lim) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> tuple[int | None, str]:
    """(bytes of memory this process may still use, where that number comes from); (None, reason) if unknown."""
    try:
        import mlx.core as mx

        if mx.default_device() == mx.gpu and hasattr(mx, "device_info"):
            info = mx.device_info()
            size = info.get("memory_size") or info.get("total_memory")
            if size:
                return int(size), "the GPU's memory (mx.device_info)"
    except Exception:  # noqa: BLE001 - no device information: fall back to the system's
        pass
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    left = _cgroup_left()
                    if left is not None and left < avail:
                        return left, "the cgroup memory limit"
                    return avail, "MemAvailable in /proc/meminfo"
        except (OSError, ValueError, IndexError):
            pass
    if sys.platform == "darwin":
        try:
            return int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                                      timeout=5).stdout.strip()), "sysctl hw.memsize"
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return None, "unknown on this platform"


def param_count(args) -> int:
    """Parameters of a token model of these args (mlx_pn.models.transformer.ModelArgs), before building it."""
    d, n, f, v = args.hidden_size, args.num_hidden_layers, args.intermediate_size, args.vocab_size
    h = args.num_attention_heads
    kv = (getattr(args, "num_key_value_heads", None) or h) * (d // h)
    attn = d * d + 2 * d * kv + d * d  # q, k, v, o
    mlp = 3 * d * f
    shared_mlp, shared_o = getattr(args, "share_ffn", False), getattr(args, "share_attn_out", False)
    per_layer = attn - (d * d if shared_o else 0) + (0 if shared_mlp else mlp) + 2 * d
    return (v * d * (1 if getattr(args, "tie_word_embeddings", True) else 2) + n * per_layer + d
            + (mlp if shared_mlp else 0) + (d * d if shared_o else 0))


def training_bytes(args, n_params: int, n_trainable: int, batch_size: int, seq_len: int, act_bytes: int = BYTES,
                   fused_attention: bool = False) -> dict[str, int]:
    """The estimate of the module docstring, by part (bytes). act_bytes: 2 for a bf16/fp16 step (activations in
    that dtype; the loss still takes the logits to float32); fused_attention: a GPU's attention, whose scores are
    not kept (left out, so that the estimate stays a lower bound there: only a step that clearly cannot fit is
    refused)."""
    d, n, f = args.hidden_size, args.num_hidden_layers, args.intermediate_size
    h, v = args.num_attention_heads, args.vocab_size
    tokens = batch_size * seq_len
    scores = 0 if fused_attention else 2 * h * seq_len
    return {"weights": BYTES * n_params, "gradients": BYTES * n_trainable, "adamw": 2 * BYTES * n_trainable,
            "activations": act_bytes * tokens * n * (10 * d + 4 * f + scores),
            "logits": (act_bytes + 2 * BYTES) * tokens * v}


def _verdict(need: int, what: str, fix: str, log=None) -> None:
    avail, source = available_bytes()
    if avail is None:
        return
    if need > REFUSE_FRACTION * avail:
        raise OutOfMemoryError(f"{what} needs about {_gb(need)}, more than {REFUSE_FRACTION:.0%} of the "
                               f"{_gb(avail)} available ({source}); {fix}")
    if need > WARN_FRACTION * avail:
        msg = (f"{what} needs about {_gb(need)} of the {_gb(avail)} available ({source}): close to the limit; "
               f"{fix} if it swaps or crashes")
        if log is not None:
            log(f"warning: {msg}")
        else:
            warnings.warn(msg, ResourceWarning, stacklevel=3)


def check_model(args) -> None:
    """Before allocating a model of `args`: its float32 weights alone must fit."""
    n = param_count(args)
    _verdict(BYTES * n, f"a model of {n:,} parameters (hidden_size {args.hidden_size}, {args.num_hidden_layers} "
                        f"layers, vocabulary {args.vocab_size})",
             "choose a smaller preset or lower hidden_size / num_hidden_layers (--model.* or --large.*)")


def check_training(model, cfg, desc: str = "train", log=None) -> dict[str, int]:
    """Before the optimizer state is allocated: weights + gradients + AdamW + activations + logits of one
    micro-batch (cfg: a TrainConfig) must fit -> the estimate by part (bytes)."""
    from mlx.utils import tree_flatten

    args = getattr(model, "args", None)
    if args is None or not hasattr(args, "hidden_size"):
        return {}
    n_params = sum(p.size for _, p in tree_flatten(model.parameters()))
    n_trainable = sum(p.size for _, p in tree_flatten(model.trainable_parameters()))
    import mlx.core as mx

    gpu = mx.default_device() == mx.gpu
    low = getattr(cfg, "precision", "fp32") in ("bf16", "fp16") or (getattr(cfg, "precision", "") == "auto" and gpu)
    parts = training_bytes(args, n_params, n_trainable, cfg.batch_size, cfg.seq_len, 2 if low else BYTES, gpu)
    detail = ", ".join(f"{k} {_gb(b)}" for k, b in parts.items())
    _verdict(sum(parts.values()), f"[{desc}] training ({n_params:,} parameters, batch_size {cfg.batch_size} x "
                                  f"seq_len {cfg.seq_len}: {detail})",
             "lower batch_size (raise grad_accum to keep the effective batch), seq_len or the model size", log)
    return parts
