"""Export a trained Transformer to an mlx-lm model folder, and prove it by loading it back.

The folder holds ``config.json`` (llama, with ``tie_word_embeddings`` always written: mlx-lm
defaults it to True and would silently drop an untied head), ``model.safetensors``,
``tokenizer.json``/``tokenizer_config.json`` (converted from SentencePiece) and a
``generation_config.json`` with the eos id. Optional 4/8-bit quantization goes through mlx-lm.

STLM variants: a model with a shared FFN / attention output projection is written as a plain llama,
the shared weights copied into every layer (same logits). A byte-level model (models/byte_lm.py) is
written with that file as its ``model_file`` (config.json ``model_type: mlx_pn_byte``): mlx-lm loads
it only with ``trust_remote_code=True`` (CLI ``--trust-remote-code``); its logits are the vocabulary
log-probabilities computed by the byte decoder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_pn.data.tokenizer import BOS_ID, EOS_ID
from mlx_pn.io import atomic_folder, check_disk_space
from mlx_pn.models import byte_lm
from mlx_pn.models.transformer import Transformer, unshared


class ExportError(RuntimeError):
    pass


GROUP_SIZES = (32, 64, 128)  # what MLX's affine quantization accepts (0 crashes it, 16 and 7 are refused or skipped)
# what a previous export holds (a folder made before export folders carried the library's marker)
EXPORT_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "generation_config.json", "byte_lm.py", "README.md", "mlx-pn-config.yaml", "tokenizer.model"}


def _old_export(folder: Path) -> bool:
    """An export folder made before markers: the export's files and nothing else (never a run or a stage folder)."""
    names = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    return {"config.json", "model.safetensors"} <= names <= EXPORT_FILES and all((folder / n).is_file() for n in names)


def check_finite_weights(model) -> None:
    """ExportError naming the tensors that hold NaN or inf: such a model is not exported at all."""
    bad = [k for k, v in tree_flatten(model.parameters())
           if mx.issubdtype(v.dtype, mx.floating) and not mx.isfinite(v).all().item()]
    if bad:
        raise ExportError(f"{len(bad)} weight tensor(s) hold NaN or inf ({', '.join(bad[:3])}"
                          f"{', ...' if len(bad) > 3 else ''}); nothing was exported: export an earlier checkpoint "
                          f"or retrain from one")


def quantizable_layers(model) -> dict[str, tuple[int, ...]]:
    """{module path: weight shape} of every layer mlx-lm's quantize_model can quantize (Linear, Embedding)."""
    return dict(sorted((name, tuple(m.weight.shape)) for name, m in model.named_modules()
                       if hasattr(m, "to_quantized") and "weight" in m))


def check_group_size(layers: dict[str, tuple[int, ...]], group_size: int) -> None:
    """ExportError unless `group_size` is one MLX accepts and divides the input size of every quantizable layer
    (mlx-lm silently leaves the others unquantized: a "q4" folder at 27 or 32 bits per weight)."""
    if group_size not in GROUP_SIZES:
        raise ExportError(f"--group-size {group_size}: MLX quantizes in groups of {', '.join(map(str, GROUP_SIZES))}; "
                          f"use one of them (64 is mlx-lm's default)")
    bad = {n: s[-1] for n, s in layers.items() if s[-1] % group_size}
    if bad:
        ok = [g for g in GROUP_SIZES if all(s[-1] % g == 0 for s in layers.values())]
        name, dim = next(iter(bad.items()))
        raise ExportError(f"--group-size {group_size} does not divide the input size {dim} of {name}"
                          f"{f' (and {len(bad) - 1} more layers)' if len(bad) > 1 else ''}: those layers would stay "
                          f"unquantized; " + (f"use --group-size {max(ok)}" if ok else "no group size fits this model"))


def measured_bits(folder: Path, layers: dict[str, tuple[int, ...]], bits: int, group_size: int) -> dict:
    """Bits per weight measured from the saved tensors of `folder`: every quantizable layer must hold packed weights,
    scales and biases of exactly `bits` + (scale + bias bits) / group_size per original weight; ExportError if
    not (nothing or not everything was quantized)."""
    saved = mx.load(str(folder / "model.safetensors"))
    total_bits = sum(v.nbytes * 8 for v in saved.values())
    n_weights = sum(math.prod(s) for s in layers.values())
    for name, shape in layers.items():
        w, sc, bi = (saved.get(f"{name}.{k}") for k in ("weight", "scales", "biases"))
        if w is None or sc is None or bi is None:
            raise ExportError(f"{folder}: {name} was not quantized (no scales/biases saved); nothing was exported")
        got = 8 * (w.nbytes + sc.nbytes + bi.nbytes) / math.prod(shape)
        want = bits + 8 * (sc.itemsize + bi.itemsize) / group_size
        if abs(got - want) > 1e-6:
            raise ExportError(f"{folder}: {name} holds {got:.3f} bits per weight, expected {want:.3f} for {bits}-bit "
                              f"groups of {group_size}; nothing was exported")
    others = sum(v.size for k, v in saved.items() if not k.endswith((".scales", ".biases"))
                 and k[:-len(".weight")] not in layers)
    return {"bits_per_weight": round(total_bits / (n_weights + others), 3),
            "quantized_layers": len(layers), "group_size": group_size}


def mlx_lm_config(model: Transformer, dtype: str = "float32") -> dict:
    cfg = model.args.to_dict()
    for k in ("share_ffn", "share_attn_out"):  # the exported model is a plain llama
        cfg.pop(k, None)
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"], eos_token_id=EOS_ID,
               bos_token_id=BOS_ID, torch_dtype=dtype, rope_traditional=False,
               tie_word_embeddings=bool(model.args.tie_word_embeddings))
    return cfg


def check_inputs(model, tok_dir: Path, out: Path, dtype: str, force: bool, card_from, log) -> bool:
    """ExportError unless the tokenizer matches the model and `out` may be written -> force: True also when `out` is
    an export a kill cut short after its rename (no README.md although a card was asked for): it is redone."""
    if out.exists() and not force:
        from mlx_pn.io import has_marker

        if not (card_from is not None and has_marker(out, "export") and not (out / "README.md").exists()):
            raise ExportError(f"export directory {out} already exists; pass --force to overwrite it or choose another")
        log(f"[export] {out} has no README.md (an export stopped after its rename): writing it again")
        force = True
    if not (tok_dir / "tokenizer.json").exists():
        raise ExportError(f"{tok_dir}/tokenizer.json is missing; rebuild the tokenizer (data stage)")
    links = [f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
             if (tok_dir / f).is_symlink()]
    if links:  # an export is published as is (mlx_lm upload): never copy what a link points at
        raise ExportError(f"{tok_dir / links[0]} is a symbolic link (to {(tok_dir / links[0]).resolve()}); the export "
                          f"copies only the tokenizer's own files: replace the link with the file, or rebuild the "
                          f"tokenizer (data stage)")
    try:
        vocab = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        len(vocab)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{tok_dir / 'tokenizer.json'} is not a readable tokenizer ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:80] if str(e) else 'no model.vocab'}); rebuild the tokenizer "
                          f"(data stage)") from None
    if len(vocab) != model.args.vocab_size:
        raise ExportError(f"tokenizer {tok_dir} has {len(vocab)} ids but the model's vocab_size is "
                          f"{model.args.vocab_size}; export with the tokenizer the model was trained with")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ExportError(f"--dtype must be float32, float16 or bfloat16, got {dtype}")
    check_finite_weights(model)
    return force


def export_model_and_config(model, quantize: int | None, group_size: int, dtype: str):
    """The model as mlx-lm will load it -> (that model, its config.json, its quantizable layers (None unquantized),
    its parameter count before quantization): a byte model as itself, a token model as a plain llama (shared
    FFN / o_proj written into every layer), in `dtype`, quantized by mlx-lm when asked."""
    from mlx_lm.utils import quantize_model

    if isinstance(model, byte_lm.Model):
        if quantize:
            raise ExportError("--quantize is not supported for byte-level models (model.frontend=byte)")
        export_model = byte_lm.Model(model.args)
        export_model.update(model.parameters())
        cfg = byte_config(export_model, dtype)
    else:
        export_model = unshared(model)
        cfg = mlx_lm_config(export_model, dtype)
    export_model.set_dtype(getattr(mx, dtype))
    n_params = int(sum(v.size for k, v in tree_flatten(export_model.parameters()) if k != "byte_table"))
    layers = None
    if quantize:
        if quantize not in (2, 3, 4, 5, 6, 8):
            raise ExportError(f"--quantize must be one of 2,3,4,5,6,8 bits, got {quantize}")
        layers = quantizable_layers(export_model)
        check_group_size(layers, group_size)
        export_model, cfg = quantize_model(export_model, cfg, group_size=group_size, bits=quantize)
    return export_model, cfg, layers, n_params


def write_export(tmp: Path, export_model, cfg: dict, tok_dir: Path) -> None:
    """The export's files into `tmp`: weights, config.json, the tokenizer (with the chat template), the
    generation config, and the byte model's code for a byte model."""
    os.chmod(tmp, user_mode())  # mkdtemp's 0o700 would make the export unreadable to others
    weights = dict(tree_flatten(export_model.parameters()))
    mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
    (tmp / "config.json").write_text(json.dumps(dict(sorted(cfg.items())), indent=4))
    copy_tokenizer_files(tok_dir, tmp)
    add_chat_template(tmp / "tokenizer_config.json")
    (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID}, indent=2))
    if "model_file" in cfg:
        shutil.copy(byte_lm.__file__, tmp / cfg["model_file"])


def export_mlx_lm(model, tokenizer_hf_dir: str | Path, out: str | Path, *, quantize: int | None = None,
                  group_size: int = 64, dtype: str = "float32", force: bool = False,
                  verify: bool = True, card_from: str | Path | None = None, base_model: str | None = None,
                  log=None) -> dict:
    """Write `out` atomically; returns a report with the verification result. card_from: the trained model's
    folder; with it, out/README.md is its model card (mlx_pn.model_card; base_model goes in its front matter),
    written before the rename like every other file. log: where the steps are said as they start (writing,
    verifying with mlx-lm, the result); None: silent."""
    say = log or (lambda *a: None)
    out, tok_dir = Path(out), Path(tokenizer_hf_dir)
    force = check_inputs(model, tok_dir, out, dtype, force, card_from, say)
    export_model, cfg, layers, n_params = export_model_and_config(model, quantize, group_size, dtype)
    report = {"path": str(out), "quantize": quantize, "dtype": dtype, "params": int(model.num_params()),
              "exported_params": n_params}
    weight_bytes = sum(v.nbytes for _, v in tree_flatten(export_model.parameters()))
    # twice the weights: with --force the old export stays until the new one has replaced it
    check_disk_space(out.parent, 2 * weight_bytes + (8 << 20), f"the export {out.name}",
                     "free some space or export elsewhere (--to)")

    def write_and_verify(tmp: Path):
        """Verified in the temporary folder: only a verified export, card included, ever has its final name (an
        error, Ctrl-C or a kill before the rename leaves nothing under it)."""
        kind = f"{quantize}-bit, group size {group_size}" if quantize else dtype
        say(f"[export] {out}: writing {n_params / 1e6:.2f}M parameters ({kind}, {weight_bytes / 2**20:.1f} MiB)")
        write_export(tmp, export_model, cfg, tok_dir)
        t0 = time.time()
        if verify:
            say("[export] verifying: loading it with mlx_lm.load and comparing its logits on a fixed input with the "
                "trained model's")
        try:
            if quantize:
                report.update(measured_bits(tmp, layers, quantize, group_size))
            if verify and dtype != "float32" and not quantize:
                # float16/bfloat16: against our model in that dtype (the same rounded weights, the same ops), then
                # how often its greedy token is the fp32 model's
                report.update(verify_export(export_model, tmp, exact=True))
                report["argmax_agreement_vs_float32"] = verify_export(model, tmp, exact=False)["argmax_agreement"]
            elif verify:
                report.update(verify_export(model, tmp, exact=not quantize))
        except ExportError as e:
            raise ExportError(str(e).replace(str(tmp), str(out))) from None
        if verify:
            say(f"[export] verified in {time.time() - t0:.1f} s: max |logit diff| {report['max_abs_logit_diff']:.2g}, "
                f"greedy token agreement {report['argmax_agreement']:.0%}")
        if card_from is not None:
            from mlx_pn.model_card import write_model_card

            write_model_card(tmp, card_from, report, base_model)

    # --force replaces only a previous export (marked, or an old one of only export files): never a run folder
    atomic_folder(out, write_and_verify, kind="export", legacy=_old_export)
    return report


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer_files(tok_dir: Path, dest: Path) -> None:
    """The tokenizer's own files into `dest` (check_inputs refused links: nothing a link points at is copied)."""
    for f in TOKENIZER_FILES:
        if (tok_dir / f).is_file():
            shutil.copyfile(tok_dir / f, dest / f, follow_symlinks=False)


# How mlx_pn.data.sources turns prompt/completion and messages records into training text: one "ROLE: CONTENT" line
# per message. As the tokenizer's chat template, mlx-lm's lora (prompt/completion data) and its server's chat
# endpoint format chats the way the model was trained; the generation prompt stops at "assistant:" since training
# text has the space inside the completion's first piece.
# (newlines as Jinja string literals: Hugging Face renders templates with trim_blocks, which eats one after a tag)
CHAT_TEMPLATE = ("{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
                 "{{ message['role'] }}: {{ message['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '\\nassistant:' }}{% endif %}")


def add_chat_template(tokenizer_config: Path) -> None:
    cfg = json.loads(tokenizer_config.read_text()) if tokenizer_config.exists() else {}
    cfg["chat_template"] = CHAT_TEMPLATE
    tokenizer_config.write_text(json.dumps(cfg, indent=2))


def user_mode() -> int:
    """0o777 less the user's umask: the mode mkdir gives a folder."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def byte_config(model: byte_lm.Model, dtype: str = "float32") -> dict:
    cfg = model.args.to_dict()
    cfg.update(model_file="byte_lm.py", architectures=["MlxPnByteLM"], eos_token_id=EOS_ID, bos_token_id=BOS_ID,
               torch_dtype=dtype)
    return cfg


def verify_export(model, out: Path, exact: bool = True, n_tokens: int = 32) -> dict:
    """Load `out` with mlx-lm and compare its logits with the source model's on a fixed input."""
    from mlx_lm import load

    is_byte = isinstance(model, byte_lm.Model)
    if is_byte:
        n_tokens = min(n_tokens, 8)  # every position scores the whole vocabulary through the byte decoder
    lm, _ = load(str(out), trust_remote_code=is_byte)
    rng = np.random.default_rng(0)
    x = mx.array(rng.integers(3, model.args.vocab_size, size=(1, n_tokens)).astype(np.int32))
    ref, got = model(x).astype(mx.float32), lm(x).astype(mx.float32)
    # the byte model's duplicate byte strings have logit -inf in both: equal, not nan
    both_inf = mx.isinf(ref) & mx.isinf(got) & (ref == got)
    max_diff = mx.where(both_inf, 0.0, mx.abs(ref - got)).max().item()
    agree = (mx.argmax(ref, -1) == mx.argmax(got, -1)).mean().item()
    tol = 1e-4 if exact else None
    if not math.isfinite(max_diff):  # NaN or inf logits in ours or the export's (`nan > tol` is False)
        raise ExportError(f"{out}: logits are not finite (max |diff| {max_diff}) in the source model or the mlx-lm "
                          f"export; nothing was exported")
    if exact and not max_diff <= tol:
        raise ExportError(f"{out}: mlx-lm logits differ from the source model by {max_diff:.3g} (> {tol}); nothing "
                          f"was exported")
    return {"max_abs_logit_diff": max_diff, "argmax_agreement": agree}


def generate_command(folder: str | Path, prompt: str = "The", max_tokens: int = 60) -> str:
    """The mlx-lm command that runs an exported folder, with the BLAS set up first (mlx_pn.lm; installed: `mlx-pn
    lm generate ...`); byte models need --trust-remote-code."""
    from mlx_pn.model_card import SAMPLE_FLAGS  # sampled: greedy text from a small model repeats one piece

    remote = "model_file" in json.loads((Path(folder) / "config.json").read_text())
    return (f"python -m mlx_pn.lm generate --model {folder} --prompt {prompt!r} --max-tokens {max_tokens} "
            f"{SAMPLE_FLAGS}"
            + (" --trust-remote-code" if remote else ""))

