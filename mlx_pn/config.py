"""Dataclass configs: defaults declared once here, then YAML/JSON, then ``--section.key value``.

Precedence: command line > config file > dataclass defaults. Unknown keys are errors that name the
file (or flag) and suggest the closest valid key, so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    """A config file or flag is wrong; the message says where and how to fix it."""


def check_name(name, key: str) -> str:
    """A name that becomes a folder (a domain, a grid variant): one plain path component, so that nothing is
    ever written outside the run's folders. A ConfigError naming the key and the fix otherwise."""
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or name != name.strip() or any(
            c in name for c in "/\\\0") or name.startswith((".", "~")):
        raise ConfigError(f"{key}: {name!r} is not a usable name (it becomes a folder): use letters, digits, '-' "
                          f"or '_', with no '/', '\\', '..', leading '.' or '~', and not empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"{key}: a {len(name.encode())}-byte name is too long for a folder name; use at most "
                          f"{MAX_NAME_BYTES} bytes")
    return name


MAX_NAME_BYTES = 100  # a name becomes a folder, and the run adds its own names below it (255 bytes each at most)


def _need(ok: bool, key: str, value, rule: str, fix: str) -> None:
    """ConfigError "KEY must be RULE, got VALUE; FIX" unless `ok`: the one shape of a numeric field's error."""
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}; {fix}")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _f(default, help: str, **kw):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class DataConfig:
    generic: str = _f("bundled:generic",
                      "generic (pretraining) text: comma-separated sources, each 'bundled:NAME' (ships with "
                      "mlx_pn), a .txt/.jsonl/.jsonl.gz/.parquet file, a folder of them, or 'hf:DATASET[/CONFIG]"
                      "[:SPLIT]' (Hugging Face, needs internet; a user option, never used by tests)")
    domains: dict = _f({"drama": "bundled:drama", "legal": "bundled:legal", "medical": "bundled:medical"},
                       "specialization domains: NAME=SOURCES pairs (same source syntax as data.generic); "
                       "on the command line 'drama=bundled:drama,code=/path/to/py' (';' between pairs when a "
                       "domain has several comma-separated sources); replaces the config's domains")
    add_domains: dict = _f({}, "domains added to data.domains (same NAME=SOURCES syntax; a name already there is "
                               "replaced): --data.add_domains law=/path/law/ keeps the config's domains. A source "
                               "may be an mlx-lm data folder (train.jsonl, valid.jsonl, test.jsonl): its splits are "
                               "kept as given")
    dir: str = _f("", "where the tokenizer and token shards are written; empty = OUT/data")
    vocab_size: int = _f(4096, "SentencePiece vocabulary size (the paper uses 32000)")
    tokenizer_sample_mb: float = _f(32.0, "at most this many MB of generic training text train the tokenizer")
    valid_fraction: float = _f(0.05, "share of each corpus's documents held out for validation (by document)")
    test_fraction: float = _f(0.05, "share of each corpus's documents held out for the final test (by document)")
    max_docs: int = _f(0, "use at most this many documents per corpus (0 = all); handy for smoke runs")
    test_windows: int = _f(0, "evaluate at most this many windows of each test split (0 = all; bits/byte only "
                              "when all)")
    workers: int = _f(0, "processes that index the text for splitting and de-duplication, and threads that encode "
                         "it into shards (0 = one per core); the result is the same for any number")

    def check(self, name: str = "data") -> None:
        """ConfigError naming `{name}.KEY`, the value and the fix, for a value this section cannot use."""
        bad = {k: v for k, v in self.domains.items() if not isinstance(k, str) or not isinstance(v, str) or not v}
        if bad:
            raise ConfigError(f"{name}.domains: each entry must be NAME: SOURCES (a non-empty string), got {bad!r}")
        for domain in self.domains:
            check_name(domain, f"{name}.domains")
        if not 0 <= self.valid_fraction < 0.5 or not 0 <= self.test_fraction < 0.5:
            raise ConfigError(f"{name}.valid_fraction and {name}.test_fraction must be in [0, 0.5)")
        if self.vocab_size < 260:
            raise ConfigError(f"{name}.vocab_size={self.vocab_size} is too small: byte fallback alone needs 259 ids")
        _need(_finite(self.tokenizer_sample_mb) and self.tokenizer_sample_mb > 0, f"{name}.tokenizer_sample_mb",
              self.tokenizer_sample_mb, "a finite number > 0", "the default is 32")
        for k in ("max_docs", "test_windows", "workers"):
            _need(getattr(self, k) >= 0, f"{name}.{k}", getattr(self, k), ">= 0", "0 means all (cores, for workers)")


@dataclass
class ModelConfig:
    """A preset (mlx_pn.models.build.PRESETS) and overrides of its fields, which keep the names of
    transformer.ModelArgs / byte_lm.ModelArgs (None: the preset's value); tests/test_model.py checks them."""

    preset: str = _f("cpu", "architecture preset: tiny | cpu | cpu-large | slm (paper, 126M) | llm (paper, 771M)")
    hidden_size: Optional[int] = _f(None, "override the preset's hidden size d")
    num_hidden_layers: Optional[int] = _f(None, "override the number of layers")
    intermediate_size: Optional[int] = _f(None, "override the SwiGLU inner size")
    num_attention_heads: Optional[int] = _f(None, "override the number of query heads")
    num_key_value_heads: Optional[int] = _f(None, "key/value heads (GQA); default = query heads")
    tie_word_embeddings: bool = _f(True, "share the input embedding and the output head")
    rope_theta: float = _f(10000.0, "RoPE base")
    max_position_embeddings: Optional[int] = _f(None, "longest context the model is meant for")
    # Super Tiny LM options (arXiv 2405.14159): switches of the same trunk, exported as a plain llama.
    share_ffn: bool = _f(False, "one SwiGLU MLP shared by all layers (STLM / MobileLLM FFN sharing)")
    share_attn_out: bool = _f(False, "one attention output projection (o_proj) shared by all layers")
    frontend: str = _f("token", "token (an embedding per SentencePiece id) | byte (each token's UTF-8 bytes embedded, "
                                "encoded and mean-pooled; a byte decoder predicts the next token's bytes)")
    byte_chunk_len: int = _f(16, "byte frontend: bytes kept per token chunk (longer tokens are truncated)")
    byte_dim: int = _f(128, "byte frontend: width of the byte encoder and decoder")
    byte_encoder_layers: int = _f(1, "byte frontend: bidirectional attention blocks in the byte encoder")
    byte_decoder_layers: int = _f(1, "byte frontend: bidirectional attention blocks in the byte decoder")

    def check(self, name: str = "model") -> None:
        """ConfigError naming `{name}.KEY` (name: "model" or "large"); the preset is checked where it is read
        (mlx_pn.models.build.check_preset)."""
        if self.frontend not in ("token", "byte"):
            raise ConfigError(f"{name}.frontend must be 'token' or 'byte', got {self.frontend!r}")
        if self.frontend == "byte" and (self.share_ffn or self.share_attn_out):
            raise ConfigError(f"{name}.frontend=byte cannot be combined with {name}.share_ffn/share_attn_out (not "
                              "implemented for the byte model's trunk)")
        for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings", "byte_chunk_len", "byte_dim"):
            v = getattr(self, k)
            _need(v is None or v >= 1, f"{name}.{k}", v, ">= 1", "omit it to keep the preset's value")
        for k in ("byte_encoder_layers", "byte_decoder_layers"):
            _need(getattr(self, k) >= 0, f"{name}.{k}", getattr(self, k), ">= 0", "the default is 1")
        _need(_finite(self.rope_theta) and self.rope_theta > 0, f"{name}.rope_theta", self.rope_theta,
              "a finite number > 0", "the default is 10000")
        # The heads' rule needs the preset's values: mlx_pn.models.build.resolved checks it at load (check_heads).


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    steps: int = _f(300, "optimizer steps (upper bound when early stopping is on); finetune.steps 0 = no step cap "
                         "(early stopping or finetune.max_epochs ends it)")
    max_epochs: float = _f(0.0, "finetune only: at most this many epochs over the domain's train windows (0 = no "
                                "epoch cap); the run ends at the first of early stopping, max_epochs and steps")
    batch_size: int = _f(16, "sequences per micro-batch")
    seq_len: int = _f(256, "tokens per training sequence (packed, no padding)")
    grad_accum: int = _f(1, "micro-batches per optimizer step (effective batch = batch_size * grad_accum)")
    lr: float = _f(3e-3, "peak learning rate (AdamW)")
    min_lr: float = _f(3e-4, "learning rate at the end of the cosine decay")
    warmup: int = _f(30, "linear warm-up steps from 0 to lr")
    weight_decay: float = _f(0.1, "decoupled AdamW weight decay on matrices (never on norms/embeddings)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    eps: float = _f(1e-8, "AdamW epsilon")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")
    eval_every: int = _f(100, "evaluate validation perplexity every N steps (and at the end)")
    eval_batches: int = _f(16, "validation batches per evaluation (0 = the whole split)")
    log_every: int = _f(10, "write a metrics line every N steps")
    save_every: int = _f(100, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    patience: int = _f(0, "early stopping: stop after N evaluations without improvement and keep the best "
                          "weights (0 = off)")
    seed: int = _f(0, "seed for initialisation and data order")
    compile: bool = _f(True, "compile the training step with mx.compile")
    precision: str = _f("auto", "compute dtype of the step: fp32 | bf16 | fp16 (fp32 master weights, optimizer "
                                "state and loss either way) | auto (bf16 on a GPU, fp32 on a CPU)")

    def check(self, name: str = "pretrain") -> None:
        """ConfigError naming `{name}.KEY` (name: "pretrain" or "finetune")."""
        for k in ("steps", "batch_size", "seq_len", "grad_accum"):
            lo = 0 if k == "steps" and name == "finetune" else 1  # finetune.steps 0: no step cap
            if getattr(self, k) < lo:
                raise ConfigError(f"{name}.{k} must be >= {lo}, got {getattr(self, k)}")
        if name != "finetune" and self.max_epochs:
            raise ConfigError(f"{name}.max_epochs: only fine-tuning is budgeted in epochs ({name} runs {name}.steps "
                              f"steps, which the comparison matches FLOPs by); set {name}.max_epochs 0")
        if self.max_epochs < 0 or (self.steps == 0 and self.max_epochs == 0):
            raise ConfigError(f"{name}.steps={self.steps} and {name}.max_epochs={self.max_epochs}: set a budget, "
                              f"steps > 0 (a step cap) or max_epochs > 0 (an epoch cap), or both, e.g. --{name}.steps 0 "
                              f"--{name}.max_epochs 10")
        if not 0 < self.lr < float("inf"):
            raise ConfigError(f"{name}.lr must be a finite number > 0, got {self.lr}")
        for k in ("eval_every", "save_every", "log_every"):
            _need(getattr(self, k) >= 1, f"{name}.{k}", getattr(self, k), ">= 1",
                  "it is a period in steps (1 = every step; the end of the run is always included)")
        for k in ("warmup", "eval_batches", "patience", "keep_checkpoints"):
            _need(getattr(self, k) >= 0, f"{name}.{k}", getattr(self, k), ">= 0",
                  "0 turns it off" if k != "eval_batches" else "0 means the whole split")
        for k in ("beta1", "beta2"):
            _need(_finite(getattr(self, k)) and 0 <= getattr(self, k) < 1, f"{name}.{k}", getattr(self, k),
                  "in [0, 1)", "AdamW's usual values are 0.9 and 0.95")
        _need(_finite(self.eps) and self.eps > 0, f"{name}.eps", self.eps, "a finite number > 0", "the default is 1e-8")
        _need(_finite(self.grad_clip) and self.grad_clip >= 0, f"{name}.grad_clip", self.grad_clip,
              "a finite number >= 0", "0 turns clipping off")
        for k in ("min_lr", "weight_decay"):
            _need(_finite(getattr(self, k)) and getattr(self, k) >= 0, f"{name}.{k}", getattr(self, k),
                  "a finite number >= 0", "0 is allowed")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{name}.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class ClusterConfig:
    embedder: str = _f("static", "document embedder: 'minilm' (all-MiniLM-L6-v2 in MLX; slow on a CPU, ~10 windows/s) "
                                 "or 'static' (MiniLM's word-piece embeddings averaged; fast on any CPU)")
    k: int = _f(16, "clusters for mixtures / projected networks (the paper: 16-32)")
    k_importance: int = _f(1024, "clusters for importance sampling (the paper: 1024); lowered with a warning "
                                 "when the corpus has too few windows for it")
    window: int = _f(0, "tokens per embedded window; 0 = pretrain.seq_len, so every training window has a cluster")
    fit_windows: int = _f(100000, "k-means is fitted on at most this many generic windows (a seeded sample)")
    iters: int = _f(50, "at most this many Lloyd iterations")
    batch_size: int = _f(64, "windows per embedding batch")
    seed: int = _f(0, "seed for the k-means initialisation and sampling")

    def check(self, name: str = "cluster") -> None:
        if self.embedder not in ("minilm", "static"):
            raise ConfigError(f"{name}.embedder must be 'minilm' or 'static', got {self.embedder!r}")
        if self.k < 1 or self.k_importance < 1:
            raise ConfigError(f"{name}.k and {name}.k_importance must be >= 1")
        for k in ("fit_windows", "iters", "batch_size"):
            _need(getattr(self, k) >= 1, f"{name}.{k}", getattr(self, k), ">= 1", "the default is "
                  f"{getattr(ClusterConfig, k)}")
        _need(self.window >= 0, f"{name}.window", self.window, ">= 0", "0 means pretrain.seq_len")


@dataclass
class ProjectedConfig:
    m: int = _f(0, "slm-pn: size of each cluster's code E[i] (0 = k = cluster.k)")
    h: int = _f(0, "slm-pn/slm-hn: basis matrices per MLP matrix (0 = k; the paper's sizes imply ~0.7 k)")
    hypernet_hidden: int = _f(64, "slm-hn: hidden width of the hypernetwork (histogram -> coefficients)")
    grouped: bool = _f(False, "slm-pn/slm-hn pretraining: every micro-batch from one cluster (one materialised "
                              "MLP per micro-batch: about the SLM's step time; windows drawn with replacement) "
                              "instead of each sequence routed by its own cluster (~1.5-1.8x on a CPU)")
    code_shared: float = _f(0.9, "slm-pn/slm-hn init: rho, the share of every cluster's coefficients common to all "
                                 "clusters (E[i] = (sqrt(rho) c + sqrt(1 - rho) xi_i) / sqrt(m); slm-hn: its output "
                                 "bias); the experts' cosine at init is ~rho; 0 = independent, orthogonal experts")
    match_lr: bool = _f(True, "slm-pn/slm-hn pretraining: scale each layer's basis-tensor steps by 1 / ||alpha||_1 so "
                              "a materialised expert's weights move at the slm's rate (false: every basis tensor at "
                              "lr, so an expert moves ~||alpha||_1 x lr)")
    coef_lr: float = _f(0.0, "slm-pn/slm-hn: multiplier of the coefficients' steps (codes and mixing, or the "
                             "hypernetwork); 0 = matched: 1 / sqrt(m) for slm-pn, 1 / sqrt(hypernet_hidden) for slm-hn, "
                             "so the experts move at about the slm's rate in both (docs/methods.md); 1 = plain lr")

    def check(self, name: str = "projected") -> None:
        if min(self.m, self.h) < 0 or self.hypernet_hidden < 1:
            raise ConfigError(f"{name}.m and {name}.h must be >= 0 (0 = cluster.k) and {name}.hypernet_hidden >= 1, "
                              f"got m={self.m}, h={self.h}, hypernet_hidden={self.hypernet_hidden}")
        if not 0 <= self.code_shared <= 1:
            raise ConfigError(f"{name}.code_shared must be in [0, 1] (0 = independent codes), got {self.code_shared}")
        _need(_finite(self.coef_lr) and self.coef_lr >= 0, f"{name}.coef_lr", self.coef_lr, "a number >= 0",
              "0 = matched to the coefficients' width, 1 = the plain learning rate")


@dataclass
class DistillConfig:
    temperature: float = _f(2.0, "slm-d: softmax temperature of teacher and student in the distillation term")
    alpha: float = _f(0.5, "slm-d: loss = (1 - alpha) * CE(domain tokens) + alpha * T^2 * KL(teacher || student)")
    top_k: int = _f(64, "slm-d: teacher distribution kept as its top-k log-probabilities (renormalised); the "
                        "compact form that the disk cache stores")
    cache: str = _f("auto", "slm-d teacher outputs: disk (computed once per fine-tuning window, stored as top-k "
                            "fp16 in OUT/specialize-slm-d/DOMAIN/teacher/) | live (teacher run inside every step) | "
                            "auto (disk when fine-tuning may read every window at least once, else live)")
    teacher: str = _f("", "slm-d: folder of the fine-tuned teacher; empty = OUT/specialize-llm/DOMAIN/final "
                          "(`mlx-pn specialize --method llm` makes it)")

    def check(self, name: str = "distill") -> None:
        if self.cache not in ("auto", "disk", "live"):
            raise ConfigError(f"{name}.cache must be auto, disk or live, got {self.cache!r}")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0 or self.top_k < 1:
            raise ConfigError(f"{name}.alpha must be in [0, 1], {name}.temperature > 0 and {name}.top_k >= 1")
        _need(_finite(self.temperature), f"{name}.temperature", self.temperature, "a finite number > 0",
              "the default is 2")


MIXTURE_ACCOUNTING = ("paper", "split-steps")


@dataclass
class MixtureConfig:
    accounting: str = _f("paper", "slm-mix: how the k experts share the slm's pretraining budget: paper (each expert "
                                  "trains pretrain.steps steps at pretrain.batch_size / k, as the paper's parallel "
                                  "experts; when k does not divide the batch, batch_size // k rows (>= 1) and "
                                  "proportionally more steps) | split-steps (pretrain.steps // k steps each at the "
                                  "full batch); the same tokens and FLOPs either way")
    expert_steps: int = _f(0, "slm-mix: pretraining steps per expert; 0 = from mixture.accounting (pretrain.steps, or "
                              "pretrain.steps // k with split-steps)")

    def check(self, name: str = "mixture") -> None:
        if self.accounting not in MIXTURE_ACCOUNTING:
            raise ConfigError(f"{name}.accounting must be {' or '.join(MIXTURE_ACCOUNTING)}, got {self.accounting!r}")
        _need(self.expert_steps >= 0, f"{name}.expert_steps", self.expert_steps, ">= 0", "0 = from mixture.accounting")


SELECTS = ("auto", "most-frequent", "best-loss", "all", "histogram")


def _finetune_defaults() -> TrainConfig:
    # Fine-tuning: lower lr (the paper divides by 3 for 1M tokens), early stopping on valid loss.
    # The budget: until early stopping, at most 10 epochs over the domain's train split (no step cap).
    return TrainConfig(steps=0, max_epochs=10.0, lr=1e-3, min_lr=1e-4, warmup=10, eval_every=25, save_every=25,
                       patience=3)


@dataclass
class Config:
    out: str = _f("runs/default", "output folder of this experiment (data, checkpoints, exports, results)")
    domain: str = _f("drama", "the domain that `specialize`/`export` work on (a key of data.domains)")
    method: str = _f("slm", "slm (one small model) | slm-pn (projected network) | slm-mix (k experts, one per "
                            "cluster) | slm-hn (hypernetwork) | slm-nopt (no pretraining: the domain only) | llm "
                            "(the large model, section `large`) | slm-d (slm distilled from the fine-tuned llm) | "
                            "slm-is (pretrained per domain on generic text importance-resampled to the domain); "
                            "the cluster-based ones need `mlx-pn cluster` first")
    select: str = _f("auto", "how specialization picks the starting SLM: most-frequent (the domain's top cluster) | "
                             "best-loss (lowest domain-validation loss before fine-tuning) | all (fine-tune every "
                             "expert, keep the best validation) | histogram (slm-pn/slm-hn: project with the whole "
                             "cluster histogram) | auto (histogram for slm-hn, else most-frequent)")
    specialize_tag: str = _f("", "suffix of the specialization folders (OUT/specialize[-METHOD]/DOMAIN-TAG), to keep "
                                 "several specialization settings of one pretraining side by side (the comparison "
                                 "grid's specialization budgets); empty = DOMAIN")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    large: ModelConfig = field(default_factory=lambda: ModelConfig(preset="cpu-large"),
                               metadata={"help": "the large model (method llm; the slm-d teacher)"})
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=_finetune_defaults)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    projected: ProjectedConfig = field(default_factory=ProjectedConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir) if self.data.dir else Path(self.out) / "data"

    def check(self) -> None:
        """The rules across sections and of the top-level keys (each section checks itself: validate)."""
        check_name(self.domain, "domain")
        if self.specialize_tag:
            check_name(self.specialize_tag, "specialize_tag")
        if self.select not in SELECTS:
            raise ConfigError(f"select: unknown selection '{self.select}'{_suggest(self.select, SELECTS)}")


# ---------------------------------------------------------------------------------------------
# Generic machinery: dict <-> nested dataclasses, overrides, suggestions.


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _base_type(tp):
    """Optional[int] -> int."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None))
    return tp


def leaf_keys(cls, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every settable dotted key -> (type, field)."""
    out = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out.update(leaf_keys(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (tp, f)
    return out


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def parse_value(text: str, tp, key: str, where: str):
    """Turn a command-line string into the field's type."""
    base = _base_type(tp)
    if text.lower() in ("none", "null") and base is not tp:
        return None
    try:
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if base is int:
            if "e" in text.lower():  # 1e5
                f = float(text)
                if not f.is_integer():
                    raise ValueError(text)
                return int(f)
            return int(text)
        if base is float:
            return float(text)
        if base is dict or typing.get_origin(base) is dict:
            if text.strip().startswith("{"):
                return json.loads(text)
            pairs = [p for p in text.split(";" if ";" in text else ",") if p.strip()]
            out = {}
            for p in pairs:
                name, sep, val = p.partition("=")
                if not sep:
                    raise ValueError(p)
                out[name.strip()] = val.strip()
            return out
        return str(text)
    except (ValueError, OverflowError, json.JSONDecodeError, RecursionError):
        raise ConfigError(f"{where}: '{key}' expects {getattr(base, '__name__', base)}, got {text!r}") from None


def _check_type(value, tp, key: str, where: str):
    base = _base_type(tp)
    if value is None:
        if base is tp:
            raise ConfigError(f"{where}: '{key}' may not be null")
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):
        return parse_value(value, tp, key, where)  # YAML reads 3e-4 as a string
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    expected = dict if (base is dict or typing.get_origin(base) is dict) else base
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: '{key}' expects {getattr(expected, '__name__', expected)}, got {value!r} "
            f"({type(value).__name__})"
        )
    return value


def _field_default(f: dataclasses.Field):
    """A field's own default value (a fresh object for a default_factory)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return copy.deepcopy(f.default)


def from_dict(cls, d: dict, where: str = "config", prefix: str = "", base=None):
    """Build a nested dataclass from a dict on top of `base` (default: the class's defaults); unknown keys raise
    ConfigError with a suggestion. A section starts from its field's own defaults, so a file's `finetune:`
    section keeps the fine-tuning defaults (lr 1e-3, early stopping) for every key it does not set, and a
    `large:` section the large model's preset."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {d!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    obj = base if base is not None else cls()
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k not in fields:
            valid = [f"{prefix}{n}" for n in fields]
            raise ConfigError(f"{where}: unknown key '{key}'{_suggest(key, valid)}")
        tp = hints[k]
        if _is_dataclass_type(tp):
            setattr(obj, k, from_dict(tp, v, where, f"{key}.", base=_field_default(fields[k])))
        else:
            setattr(obj, k, _check_type(v, tp, key, where))
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def set_key(cfg, key: str, value) -> None:
    *path, last = key.split(".")
    target = cfg
    for p in path:
        target = getattr(target, p)
    setattr(target, last, value)


PRESETS = Path(__file__).parent / "recipes" / "configs"  # the packaged presets (recipes/configs in a clone)


def preset_path(path: str | Path) -> Path:
    """A --config value as a file: an existing path as given, else a packaged preset by name ('tiny' or
    'tiny.yaml' -> mlx_pn/recipes/configs/tiny.yaml), so presets resolve from any directory."""
    path = Path(path)
    if path.exists() or len(path.parts) != 1:
        return path
    return next((p for p in (PRESETS / path.name, PRESETS / f"{path.name}.yaml") if p.is_file()), path)


def load_file(path: str | Path) -> dict:
    path = preset_path(path)
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ConfigError(f"config file {path} does not exist; pass --config with a YAML/JSON file or a preset "
                          f"name: {names}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            d = json.loads(text)
        else:
            d = _yaml_without_duplicate_keys(text, path)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse error becomes a ConfigError naming the file
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    return d or {}


def _yaml_without_duplicate_keys(text: str, path: Path):
    """yaml.safe_load, except that a key given twice in one mapping is an error: YAML keeps the last silently, so
    a second `pretrain:` section dropped the first one's lr back to the default."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{path}: key '{key}' appears twice in one section (lines {seen[key]} and "
                                  f"{key_node.start_mark.line + 1}); keep one and merge what is under them")
            seen[key] = key_node.start_mark.line + 1
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path | None = None, overrides: dict[str, str] | None = None, cls=Config):
    """Defaults <- file <- overrides ({'pretrain.lr': '3e-4'}) -> validated config."""
    d = load_file(path) if path else {}
    cfg = from_dict(cls, d, where=str(path) if path else "defaults")
    keys = leaf_keys(cls)
    for key, text in (overrides or {}).items():
        if key not in keys:
            raise ConfigError(f"command line: unknown option '--{key}'{_suggest(key, keys)}")
        set_key(cfg, key, parse_value(text, keys[key][0], key, f"--{key}"))
    data = getattr(cfg, "data", None)
    if isinstance(data, DataConfig) and data.add_domains:  # merged once here: everything else reads data.domains
        data.domains = {**data.domains, **data.add_domains}
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """The one entry point of the config checks: every section's check(name), in field order, then the config's
    own cross-section check() (a method's own rules: mlx_pn.methods.check)."""
    if not isinstance(cfg, Config):
        return
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "check"):
            section.check(f.name)
    cfg.check()
