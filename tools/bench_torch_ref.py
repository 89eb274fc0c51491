"""PyTorch reference of the mlx_pn trunk for `tools.bench`: the same llama architecture (tied embedding,
RMSNorm, rotate-half RoPE, causal SDPA, SwiGLU MLP), the same batch, sequence length, fp32, AdamW
(betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only), grad-norm clipping at 1.0, and
cross-entropy over the full vocabulary; on CUDA when torch sees a GPU, and with bf16 autocast when the job says
"precision": "bf16". Standalone (needs only torch): `tools.bench` runs it in a
subprocess, possibly with another Python (``--torch-python``), since torch is a benchmark-only extra.

    python tools/bench_torch_ref.py --json '{"hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 1024,
        "num_attention_heads": 4, "vocab_size": 8192, "batch": 4, "seq": 128, "modes": ["eager"]}' <<< "eager 5"

Prints one JSON line ({"torch": version, "threads": n, "errors": {...}, "warmup_s": {...}}) once every mode is
built and warmed up, then answers each stdin line "MODE N" with a JSON list of N step times in ms. Step time
= one optimizer step on a fixed batch, including `loss.item()` (the same synchronisation as MLX's eval).
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn as tnn
import torch.nn.functional as F


class RMSNorm(tnn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = tnn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(L, dh, theta):
    inv = 1.0 / theta ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh)
    ang = torch.arange(L, dtype=torch.float32)[:, None] * inv[None]  # (L, dh/2)
    return torch.cos(ang).repeat(1, 2), torch.sin(ang).repeat(1, 2)  # (L, dh): rotate-half layout


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Block(tnn.Module):
    def __init__(self, a):
        super().__init__()
        D, F_, H = a["hidden_size"], a["intermediate_size"], a["num_attention_heads"]
        self.H, self.dh = H, D // H
        self.q_proj, self.k_proj = tnn.Linear(D, D, bias=False), tnn.Linear(D, D, bias=False)
        self.v_proj, self.o_proj = tnn.Linear(D, D, bias=False), tnn.Linear(D, D, bias=False)
        self.gate_proj, self.up_proj = tnn.Linear(D, F_, bias=False), tnn.Linear(D, F_, bias=False)
        self.down_proj = tnn.Linear(F_, D, bias=False)
        self.input_layernorm = RMSNorm(D, 1e-5)
        self.post_attention_layernorm = RMSNorm(D, 1e-5)

    def forward(self, x, cos, sin):
        B, L, D = x.shape
        h = self.input_layernorm(x)
        q, k, v = (p(h).view(B, L, self.H, self.dh).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, dh)
        x = x + self.o_proj(o.transpose(1, 2).reshape(B, L, D))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(tnn.Module):
    def __init__(self, a, seq):
        super().__init__()
        self.embed_tokens = tnn.Embedding(a["vocab_size"], a["hidden_size"])
        self.layers = tnn.ModuleList([Block(a) for _ in range(a["num_hidden_layers"])])
        self.norm = RMSNorm(a["hidden_size"], 1e-5)
        cos, sin = rope_tables(seq, a["hidden_size"] // a["num_attention_heads"], a.get("rope_theta", 10000.0))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for n, p in self.named_parameters():  # the mlx_pn init (GPT-2 style)
            if p.dim() > 1:
                std = 0.02 / math.sqrt(2 * a["num_hidden_layers"]) if n.endswith(("o_proj.weight", "down_proj.weight")) \
                    else 0.02
                tnn.init.normal_(p, std=std)

    def forward(self, x, y):
        h = self.embed_tokens(x)
        for layer in self.layers:
            h = layer(h, self.cos, self.sin)
        logits = self.norm(h) @ self.embed_tokens.weight.T  # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))


def build(job: dict, mode: str):
    """-> step() for one mode ("eager" | "compile"): one AdamW step on a fixed random batch, synchronised."""
    torch.manual_seed(0)
    B, L, V = job["batch"], job["seq"], job["vocab_size"]
    dev = DEVICE
    data = torch.randint(0, V, (B, L + 1), generator=torch.Generator().manual_seed(0))
    x, y = data[:, :-1].contiguous().to(dev), data[:, 1:].contiguous().to(dev)
    model = Llama(job, L).to(dev)
    # precision bf16: autocast (fp32 weights and AdamW state, bf16 matmuls), the peer of mlx_pn's train.precision
    amp = job.get("precision", "fp32") == "bf16"
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    fwd = torch.compile(model) if mode == "compile" else model

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = fwd(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def serve(job: dict) -> None:
    """Build every mode (and warm it up), then answer stdin lines "MODE N" with the N step times (ms), so the
    caller can interleave torch rounds with its own."""
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    steps, info = {}, {"torch": torch.__version__, "threads": torch.get_num_threads(), "errors": {}, "warmup_s": {},
                       "device": str(DEVICE), "peak_mb": {}}
    for mode in job.get("modes", ["eager", "compile"]):
        try:
            t = time.perf_counter()
            fn = build(job, mode)
            for _ in range(job.get("warmup", 3)):
                fn()
            steps[mode] = fn
            info["warmup_s"][mode] = time.perf_counter() - t
            if DEVICE.type == "cuda":  # one step's peak, as the MLX side reports it
                torch.cuda.reset_peak_memory_stats()
                fn()
                info["peak_mb"][mode] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as e:  # noqa: BLE001 - torch.compile needs a C++ toolchain: report, don't die
            info["errors"][mode] = f"{type(e).__name__}: {str(e)[:300]}"
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        mode, n = line.split()
        times = []
        for _ in range(int(n)):
            t = time.perf_counter()
            steps[mode]()
            times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    serve(json.loads(sys.argv[sys.argv.index("--json") + 1]))
