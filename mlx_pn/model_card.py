"""The model card of an export: README.md in the folder, what `mlx_lm upload` publishes as the model's page.

YAML front matter in mlx-lm's style (`library_name: mlx`, `pipeline_tag`, `tags`, `base_model` when the model
was fine-tuned from a published one), then what a reader needs to trust and reuse it: the method, the data
(sources and token counts), the tokens seen in pretraining and fine-tuning, the test perplexities and bits per
byte measured before and after fine-tuning (from the specialization's results.json), the exact commands that
reproduce it (with the run's config written beside the card as mlx-pn-config.yaml) and the commands that run,
serve, fine-tune and share it (`usage_lines`, also printed by `mlx-pn export`).
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_NAME = "mlx-pn-config.yaml"  # the run's config, beside the card: the reproduce commands read it
PAPER = "https://arxiv.org/abs/2402.01093"


# What the printed commands sample with: greedy decoding of a small model repeats one piece (a tiny export printed
# 60 commas and not one letter for 'The'), so the command a user copies would show nothing. Seeded: reproducible.
SAMPLING = {"temp": 0.8, "top_p": 0.9, "seed": 0}
SAMPLE_FLAGS = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in SAMPLING.items())  # mlx_lm generate's flags


def usage_lines(folder: str | Path, prompt: str = "The", remote: bool = False) -> list[str]:
    """What to do with an export: run it (with the BLAS set up), serve it, fine-tune it with mlx-lm (our models
    have 4 layers: mlx_lm lora's default of 16 fails, --num-layers -1 means all), share it on the Hub."""
    rc = " --trust-remote-code" if remote else ""
    return [f"run it:       mlx-pn lm generate --model {folder} --prompt {prompt!r} {SAMPLE_FLAGS}{rc}   "
            f"(= python -m mlx_pn.lm generate ...: mlx-lm with the BLAS set up)",
            f"serve it:     mlx_lm.server --model {folder}{rc}   (OpenAI-style HTTP API; on Linux CPUs "
            f"mlx-pn lm server --model {folder}: several times faster)",
            f"serve many:   mlx-pn serve --config CONFIG --out RUN   (one endpoint for every specialist of the run, "
            f"each request routed to its domain by its clusters: model 'auto')",
            f"fine-tune it: mlx_lm lora --model {folder} --train --data DATA_DIR --num-layers -1{rc}   "
            f"(DATA_DIR: train.jsonl/valid.jsonl; on Linux CPUs mlx-pn lm lora ...: several times faster)",
            f"share it:     mlx_lm upload --path {folder} --upload-repo USER/NAME   (README.md is its model card; "
            f"upload keeps only its front matter, which holds the essentials: method, data, test perplexities)"]


def _is_local_path(v) -> bool:
    return isinstance(v, str) and (v.startswith(("/", "~", "./", "../")) or (len(v) > 2 and v[1] == ":" and v[2] in "\\/"))


def portable(obj, key: str = ""):
    """`obj` (a run's config or a value of it) with every absolute / home-relative local path replaced by its last
    name: a published card or mlx-pn-config.yaml names no folder of the machine it was made on. `out` becomes
    runs/NAME and a set data.dir is dropped (the default, OUT/data, is where a rerun writes it)."""
    if isinstance(obj, dict):
        return {k: portable(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    if key == "out" and isinstance(obj, str):
        return f"runs/{Path(obj).name or 'default'}"
    if key == "dir" and _is_local_path(obj):
        return ""
    if _is_local_path(obj):
        return Path(obj).name
    return obj


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_results(model_dir: str | Path) -> dict | None:
    """The specialization's results.json of a model folder (OUT/specialize-*/DOMAIN/final or best), if any."""
    model_dir = Path(model_dir)
    for cand in (model_dir / "results.json", model_dir.parent / "results.json"):
        if (r := _read(cand)) is not None and "after" in r:
            return r
    return None


def _tokens(cost: dict | None) -> int | None:
    return None if not cost else cost.get("tokens")


def _fmt(n) -> str:
    return "n/a" if n is None else f"{n:,}"


def commands(config_file: str = CONFIG_NAME, needs_clusters: bool = False, quantize: int | None = None,
             first: tuple[str, ...] = ()) -> list[str]:
    """The commands that rebuild this model from its config file (method, domain and out are in it); first: the
    methods to specialize before it (a distilled model's teacher)."""
    c = f"--config {config_file}"
    q = quantize
    return ([f"mlx-pn cluster {c}"] if needs_clusters else []) + [f"mlx-pn pretrain {c}"] + [
        f"mlx-pn specialize {c} --method {m}" for m in first] + [f"mlx-pn specialize {c}",
        f"mlx-pn export {c}" + (f" --quantize {q}" if q else "")]


def render(report: dict, results: dict | None, pretrain_summary: dict | None = None,
           base_model: str | None = None, needs_clusters: bool = False, name: str | None = None,
           remote: bool = False, first: tuple[str, ...] = ()) -> str:
    """README.md text. report: export_mlx_lm's report; results: the specialization's results.json (None: a model
    that was not specialized by mlx-pn, e.g. a pretraining folder: the card says so)."""
    cfg = portable((results or {}).get("config") or {})
    method, domain = (results or {}).get("method"), (results or {}).get("domain")
    front = front_matter(report, results, cfg, base_model)
    title = name or (f"{Path(report['path']).name}: a small `{domain}` language model" if domain
                     else Path(report["path"]).name)
    q = report.get("quantize")
    md = front + [f"# {title}", "",
                  f"A {report['params']:,}-parameter llama-style language model in the mlx-lm format "
                  f"({report.get('dtype', 'float32')}{f', {q}-bit quantized' if q else ''}), made with "
                  f"mlx-pn on [MLX](https://github.com/ml-explore/mlx)."]
    if results is None:
        md += ["", "No specialization results were found beside the exported model (its folder has no "
                   "results.json), so this card has no measured perplexities."]
    else:
        data = cfg.get("data") or {}
        how = ("pretrained on generic text, then specialized to" if results.get("pretrained_from")
               else "trained from scratch on")
        md[-1] += (f" It was {how} the `{domain}` domain with the "
               f"`{method}` method of *Need a Small Specialized Language Model? Plan Early!* "
               f"(Grangier et al., [arXiv 2402.01093]({PAPER})).")
        md += ["",
               "## Method", "",
               f"- method: `{method}`" + (f" (selection: `{results['select']}`)" if results.get("select") else ""),
               f"- pretrained from: `{_run_relative(results.get('pretrained_from'), (results.get('config') or {}).get('out'))}`",
               f"- fine-tuning: {results.get('finetune_steps')} steps, best validation at step "
               f"{results.get('best_step')} (stopped by {results.get('stopped_by') or 'its step cap'})",
               "", "## Data", "", "| corpus | sources | tokens used |", "|---|---|---|",
               f"| generic (pretraining) | `{data.get('generic', '')}` | "
               f"{_fmt(_tokens((pretrain_summary or {}).get('cost')))} seen in pretraining |",
               f"| {domain} (fine-tuning) | `{(data.get('domains') or {}).get(domain, '')}` | "
               f"{_fmt(results.get('domain_train_tokens'))} training tokens, "
               f"{_fmt(_tokens((results.get('cost_parts_all_steps') or {}).get('finetune')))} seen in fine-tuning |",
               "", "Held-out validation and test splits of each corpus are never trained on.", "",
               "## Evaluation", "",
               "Test perplexity (exp of the mean per-token NLL) and bits per byte, measured by mlx-pn on the "
               "held-out test splits (their sizes in tokens in the last column), before and after fine-tuning:", "",
               "| test split | ppl before | ppl after | bits/byte before | bits/byte after | test tokens |",
               "|---|---|---|---|---|---|"]
        for split in [domain] + [s for s in results.get("after", {}) if s != domain]:
            b, a = results.get("before", {}).get(split, {}), results["after"].get(split, {})
            md.append(f"| {split} | {_num(b.get('ppl'))} | {_num(a.get('ppl'))} | {_num(b.get('bpb'), 3)} | "
                      f"{_num(a.get('bpb'), 3)} | {_fmt(a.get('tokens') or b.get('tokens'))} |")
        if "max_abs_logit_diff" in report:
            md += ["", f"The export was reloaded with `mlx_lm.load`: max |logit difference| from the trained model "
                       f"{report['max_abs_logit_diff']:.2e}, greedy-token agreement "
                       f"{report.get('argmax_agreement', float('nan')):.3f}."]
        md += ["", "## Reproduce", "", f"With mlx-pn installed (`pip install \"mlx-pn[cpu]\"` on Linux, `pip install "
               f"mlx-pn` on macOS) and the run's config `{CONFIG_NAME}` (in this folder):", "", "```bash"]
        md += commands(needs_clusters=needs_clusters, quantize=q, first=first) + ["```"]
    rc = " --trust-remote-code" if remote else ""
    md += ["", "## Use", "", "With mlx-lm (`pip install mlx-lm`; on Linux `pip install \"mlx-lm[cpu]\"`), from the Hub "
           "once uploaded (`USER/NAME`) or from this folder:", "", "```bash",
           f"mlx_lm.generate --model USER/NAME --prompt 'The' {SAMPLE_FLAGS}{rc}",
           f"mlx_lm.server --model USER/NAME{rc}",
           f"mlx_lm.lora --model USER/NAME --train --data DATA_DIR --num-layers -1{rc}", "```", "",
           "From Python (sampled: greedy text from a model this small repeats one piece):", "", "```python",
           "import mlx.core as mx", "from mlx_lm import load, generate", "from mlx_lm.sample_utils import make_sampler", "",
           f"model, tokenizer = load(\"USER/NAME\"{', trust_remote_code=True' if remote else ''})",
           f"mx.random.seed({SAMPLING['seed']})",
           f"print(generate(model, tokenizer, prompt=\"The\", max_tokens=60, "
           f"sampler=make_sampler(temp={SAMPLING['temp']}, top_p={SAMPLING['top_p']})))", "```", "",
           "Chat-style requests (mlx_lm.server's chat endpoint, `mlx_lm lora` on prompt/completion data) use the "
           "tokenizer's chat template, the training format of such records: `user: PROMPT\\nassistant: ANSWER`.",
           "",
           "On a Linux CPU, `mlx-pn lm generate ...` (or `python -m mlx_pn.lm generate ...`) runs the same command "
           "with OpenBLAS set up first, several times faster than plain `mlx_lm` there.", "", "`--num-layers -1` fine-tunes every layer: `mlx_lm lora`'s default of 16 layers is more than "
                      "this model has.", ""]
    return "\n".join(md)


def _run_relative(path: str | None, out: str | None) -> str | None:
    """A path of the run (pretrained_from) relative to its run folder, else only its last name."""
    if not path:
        return path
    try:
        return str(Path(path).relative_to(out)) if out else Path(path).name
    except ValueError:
        return Path(path).name


def front_matter(report: dict, results: dict | None, cfg: dict, base_model: str | None) -> list[str]:
    """The YAML front matter: all that `mlx_lm upload` keeps of README.md (it rewrites the rest), so the essentials
    are here too: license, datasets (Hub ids among the sources), language (the bundled corpora: en), and an
    `mlx_pn` map with the method, domain, parameters, test perplexities and test-split sizes."""
    import yaml

    method, domain = (results or {}).get("method"), (results or {}).get("domain")
    data = cfg.get("data") or {}
    sources = [data.get("generic")] + list((data.get("domains") or {}).values())
    sources = [x for x in sources if isinstance(x, str) and x]
    # the weights inherit their training data's terms, which only the publisher knows: "other" until they say
    meta: dict = {"library_name": "mlx", "pipeline_tag": "text-generation", "license": "other"}
    if base_model:
        meta["base_model"] = base_model
    hub = sorted({x[3:].split(":")[0] for x in sources if x.startswith("hf:")})
    if hub:
        meta["datasets"] = hub
    if sources and all(x.startswith("bundled:") for x in sources):
        meta["language"] = ["en"]
    meta["tags"] = ["mlx", "mlx-pn", "small-language-model", "llama"] + [t for t in (method, domain) if t]
    essentials = {"parameters": report.get("params"), "dtype": report.get("dtype"), "quantize": report.get("quantize")}
    if results:
        essentials.update(method=method, domain=domain, paper=PAPER, sources=sources,
                          test={s: {"ppl_before": _round(results.get("before", {}).get(s, {}).get("ppl")),
                                    "ppl_after": _round(a.get("ppl")), "tokens": a.get("tokens")}
                                for s, a in results.get("after", {}).items()},
                          reproduce=commands())
    meta["mlx_pn"] = essentials
    return ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip("\n"), "---", ""]


def _round(x, digits: int = 3):
    return None if x is None else round(float(x), digits)


def _num(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def write_model_card(folder: str | Path, model_dir: str | Path, report: dict, base_model: str | None = None) -> Path:
    """Write folder/README.md (and the run's config, folder/mlx-pn-config.yaml, when results.json has one)."""
    import yaml

    from mlx_pn.io import write_text_atomic

    folder = Path(folder)
    results = find_results(model_dir)
    needs_clusters, first = False, ()
    if results and results.get("method"):
        from mlx_pn.methods import METHODS

        method = METHODS.get(results["method"])
        needs_clusters = bool(method and method.clusterings)
        first = tuple(m for m in (method.brings if method else ()) if m not in (method.name, "slm"))
    remote = "model_file" in (_read(folder / "config.json") or {})
    summary = None
    if results and results.get("pretrained_from"):
        summary = _read(Path(results["pretrained_from"]).parent / "summary.json")
    if results and results.get("config"):
        write_text_atomic(folder / CONFIG_NAME, yaml.safe_dump(portable(results["config"]), sort_keys=False))
    card = folder / "README.md"
    write_text_atomic(card, render(report, results, summary, base_model, needs_clusters, remote=remote, first=first))
    return card
