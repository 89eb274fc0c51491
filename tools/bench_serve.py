"""Serving many specialists: routing accuracy, perplexity routed vs oracle vs generic, routing latency.

On a run that has been pretrained, specialized on its domains and clustered (mlx-pn pretrain / specialize
--domain D for each D / cluster), over each domain's held-out test split cut into prompts:

  1. routing accuracy per domain of both rules (hist: cluster-histogram likelihood; centroid: nearest mean
     embedding), prompts of 64 and 256 tokens: a prompt is right when the rule's best corpus is its domain;
  2. macro perplexity (the mean over domains of each domain's test perplexity) of the mixed test prompts
     scored by the model "auto" routes each to (the server's rule and --min-confidence), by the true domain's
     specialist (oracle), by the generic model, and by the best single specialist for every prompt;
  3. the routing's added latency per request (ms: embed + score), next to the time of a 32-token greedy
     completion on the same (generic) model, measured in the same process;
  4. the server's generated tokens/s over HTTP with 1 and 4 concurrent clients ("auto", 32 tokens each);
  5. --peer DOMAIN (needs `mlx-pn export --domain DOMAIN`): the same prompt through `mlx-pn serve` (named and
     "auto") and mlx-lm's own server (`mlx-pn lm server`: mlx_lm.server with the same BLAS) on that export,
     each a child process started in this run: time to first token (streamed) and tokens/s (whole request),
     medians of --requests requests taken in turn, as ratios mlx-pn serve / mlx_lm.server;
  6. --memory (slm-pn / slm-hn runs): N experts served from one resident trunk (its LRU of --expert-cache
     materialised experts) vs the same N experts as N separate model folders, each way in a child process:
     peak RSS and resident weight bytes, for the run's domains + generic and for every cluster's expert.

The perplexity table also has c-BTM's top-2 ensemble (`mlx-pn serve --ensemble 2`): each prompt's two
best-routed models mixed by their renormalised routing scores.

    python -m tools.bench_serve --config tiny --out /tmp/serve/run --data.max_docs 300 \
        --pretrain.steps 40 --finetune.steps 20 --k 4 [--peer legal] [--memory]

Prompts are consecutive pieces of each test split (at most --limit per domain); order does not matter for
any figure here (each prompt is scored on its own), so the mixed set is not shuffled.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.data.prepare import GENERIC

REPO = Path(__file__).resolve().parents[1]  # the checkout: the child processes run from it


def extra(p):
    g = p.add_argument_group("bench")
    g.add_argument("--k", type=int, default=None, help="the clustering to route by (default cluster.k)")
    g.add_argument("--limit", type=int, default=40, help="prompts per domain and length")
    g.add_argument("--ppl-tokens", type=int, default=128, help="tokens per prompt for the perplexity table")
    g.add_argument("--min-confidence", type=float, default=0.5, help="as mlx-pn serve --min-confidence")
    g.add_argument("--peer", default="", help="a domain with an export: latency against mlx_lm.server on it")
    g.add_argument("--requests", type=int, default=10, help="timed requests per server and kind (--peer)")
    g.add_argument("--memory", action="store_true", help="slm-pn / slm-hn: trunk + LRU vs N separate models")
    g.add_argument("--expert-cache", type=int, default=4, help="as mlx-pn serve --expert-cache")
    g.add_argument("--skip", default="", help="comma-separated sections not to run: routing, ppl, latency, http")


def token_logprobs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for t = 1.. under model, (len(ids) - 1,)."""
    import mlx.core as mx

    x = mx.array([ids])
    logits = model(x[:, :-1]).astype(mx.float32)[0]
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return np.array(mx.take_along_axis(lp, x[0, 1:, None], axis=-1)[:, 0], np.float64)


def main(argv=None):
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.serve.accuracy import heldout_prompts
    from mlx_pn.serve.models import load_run_models
    from mlx_pn.serve.router import load_router

    parser = cli_parser(__doc__, extra=extra)
    cfg, args = parse(parser, argv)
    skip = {x for x in args.skip.split(",") if x}
    data = prepare_data(cfg, log=lambda *a: None)
    domains = data.domain_names()
    router = load_router(cfg, data.tokenizer, k=args.k, min_confidence=args.min_confidence)
    models = load_run_models(cfg, log=lambda *a: None, expert_cache=args.expert_cache)
    missing = [n for n in [*domains, GENERIC] if n not in models or models[n].error]
    if missing:
        raise SystemExit(f"error: no usable model for {', '.join(missing)} under {cfg.out}; pretrain and "
                         f"specialize every domain first (see this file's docstring)")
    print(f"(machine load at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"method {cfg.method}; served: " + ", ".join(
              f"{n} ({'trunk, on demand' if m.experts else m.source.parent.name + '/' + m.source.name})"
              for n, m in models.items()) + ")\n")
    if "routing" not in skip:
        routing(router, data, domains, args.limit)
    prompts = [(d, t) for d in domains for t in heldout_prompts(data, d, args.ppl_tokens, args.limit)]
    if "ppl" not in skip:
        perplexity(router, models, data, domains, prompts, args)
    if "latency" not in skip:
        latency(router, models, cfg, prompts, args.ppl_tokens)
    if "http" not in skip:
        concurrency(cfg, data, [t for _, t in prompts], args.k, args.min_confidence)
    if args.peer:
        peer_latency(cfg, args)
    if args.memory:
        memory(cfg, data, models, args.expert_cache)


def routing(router, data, domains, limit):
    from mlx_pn.serve.accuracy import routing_accuracy

    print(f"## Routing accuracy ({len(router.names)} candidates: generic + {len(domains)} domains; chance "
          f"{1 / len(router.names):.2f}), up to {limit} test prompts per domain\n")
    print("| prompt tokens | rule | " + " | ".join(domains) + " | macro |")
    print("|---|---|" + "---|" * (len(domains) + 1))
    for n in (64, 256):
        acc = routing_accuracy(router, data, domains, n, limit)
        for rule in ("hist", "centroid"):
            print(f"| {n} | {rule} | " + " | ".join(f"{acc[rule][d]:.2f}" for d in domains)
                  + f" | {acc[rule]['macro']:.2f} |")


def perplexity(router, models, data, domains, prompts, args):
    """Every prompt scored by every model once (per-token log p); each column picks a model (or the top-2 mixture)
    per prompt."""
    from tqdm import tqdm

    from mlx_pn.serve.ensemble import mixture_nll, top2

    names = [*domains, GENERIC]
    scores, routed, mixed = [], [], []
    for d, text in tqdm(prompts, desc="perplexity", unit="prompt"):
        ids = data.tokenizer.encode(text)
        lps = {m: token_logprobs(models[m].load(), ids) for m in names}
        scores.append({m: (-float(lp.sum()), len(lp)) for m, lp in lps.items()})
        routed.append(router.route(text).domain)
        pair = top2(router.scores(text)[router.rule], router.names)
        mixed.append((mixture_nll([lps[n] for n, _ in pair], [w for _, w in pair]), len(ids) - 1))

    def macro(pick) -> float:
        per = {d: [scores[i][pick(i, dd)] if pick else mixed[i] for i, (dd, _) in enumerate(prompts) if dd == d]
               for d in domains}
        return float(np.mean([np.exp(sum(s for s, _ in v) / sum(n for _, n in v)) for v in per.values()]))

    single = {m: macro(lambda i, d, m=m: m) for m in domains}
    best = min(single, key=single.get)
    print(f"\n## Macro test perplexity, {len(prompts)} prompts of {args.ppl_tokens} tokens "
          f"(rule {router.rule}, --min-confidence {args.min_confidence})\n")
    print("| routed by | macro ppl |\n|---|---|")
    print(f"| auto (share sent to generic: {routed.count(GENERIC) / len(routed):.2f}) | "
          f"{macro(lambda i, d: routed[i]):.2f} |")
    print(f"| auto, c-BTM top-2 ensemble (--ensemble 2) | {macro(None):.2f} |")
    print(f"| oracle (true domain) | {macro(lambda i, d: d):.2f} |")
    print(f"| generic model | {macro(lambda i, d: GENERIC):.2f} |")
    print(f"| best single specialist ({best}) | {single[best]:.2f} |")


def latency(router, models, cfg, prompts, n_tokens):
    """The router's work per request vs a 32-token completion on the generic model, in this process."""
    from mlx_lm.generate import generate

    texts = [t for _, t in prompts[:: max(1, len(prompts) // 30)]]
    route_ms, gen_ms = [], []
    g = models[GENERIC]
    for text in texts:
        t0 = time.perf_counter()
        router.route(text)
        route_ms.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        generate(g.load(), g.tokenizer, g.tokenizer.encode(text), max_tokens=32)
        gen_ms.append(1e3 * (time.perf_counter() - t0))
    r, q = statistics.median(route_ms), statistics.median(gen_ms)
    print(f"\n## Routing latency ({len(texts)} prompts of {n_tokens} tokens, medians)\n")
    print(f"routing {r:.2f} ms per request; a 32-token greedy completion on the generic model {q:.1f} ms; "
          f"routing adds {100 * r / q:.1f}% ({cfg.cluster.embedder} embedder)")


def concurrency(cfg, data, texts: list[str], k, min_confidence, requests: int = 8, max_tokens: int = 32) -> None:
    """Generated tokens/s of a server thread answering 1 and 4 concurrent urllib clients."""
    import json
    import threading
    import urllib.request

    from mlx_pn.serve.app import build_app
    from mlx_pn.serve.server import make_server

    server = make_server(build_app(cfg, data.tokenizer, k=k, min_confidence=min_confidence, log=lambda *a: None), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/completions"

    def client(i: int, out: list):
        for j in range(requests):
            body = {"prompt": texts[(i * requests + j) % len(texts)], "max_tokens": max_tokens}
            req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as r:
                out.append(json.loads(r.read())["usage"]["completion_tokens"])

    print(f"\n## Server throughput over HTTP ({requests} requests of up to {max_tokens} tokens per client)\n")
    print("| clients | generated tokens/s |\n|---|---|")
    for n in (1, 4):
        out: list[int] = []
        threads = [threading.Thread(target=client, args=(i, out)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"| {n} | {sum(out) / (time.perf_counter() - t0):.0f} |")
    server.shutdown()
    server.server_close()


# --- 5. latency against mlx_lm.server on the same export ---------------------------------------------------------


def _child_env() -> dict:
    """This environment with the checkout first on PYTHONPATH: the children import this tree's mlx_pn and tools."""
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(cmd: list[str], url: str, log: Path, timeout: float = 300) -> subprocess.Popen:
    """A server child process, once GET url answers 200 (SystemExit with its log's tail if it never does)."""
    import urllib.request

    p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO, env=_child_env())
    t0 = time.time()
    while time.time() - t0 < timeout:
        if p.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return p
        except OSError:
            time.sleep(0.5)
    p.kill()
    raise SystemExit(f"error: {' '.join(cmd[:4])} did not come up:\n{log.read_text()[-2000:]}")


def _timed(url: str, body: dict, prompts: tuple[str, str]) -> tuple[float, float, int]:
    """(time to the first streamed text of prompts[0], s; tokens/s of the whole non-streamed request of prompts[1];
    its completion tokens)."""
    import urllib.request

    def post(b):
        return urllib.request.urlopen(urllib.request.Request(url, json.dumps(b).encode(),
                                                             {"Content-Type": "application/json"}), timeout=300)

    t0 = time.perf_counter()
    ttft = None
    with post(body | {"stream": True, "prompt": prompts[0]}) as r:
        for line in r:
            if ttft is None and line.startswith(b"data: {"):
                choice = (json.loads(line[6:]).get("choices") or [{}])[0]
                if choice.get("text") or (choice.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    with post(body | {"prompt": prompts[1]}) as r:
        n = json.loads(r.read())["usage"]["completion_tokens"]
    return ttft if ttft is not None else float("nan"), n / (time.perf_counter() - t0), n


def peer_latency(cfg, args, max_tokens: int = 32) -> None:
    """The same prompt through mlx-pn serve (named, and "auto") and mlx_lm.server on the domain's export."""
    from mlx_pn.serve.models import export_folder

    folder = export_folder(cfg, args.peer)
    if not (folder / "config.json").exists():
        raise SystemExit(f"error: --peer {args.peer}: no export at {folder}; run `mlx-pn export --domain {args.peer}` "
                         f"with the same --config/--out first")
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.serve.accuracy import heldout_prompts

    if args.peer not in cfg.data.domains:
        raise SystemExit(f"error: --peer {args.peer}: not one of the run's domains ({', '.join(cfg.data.domains)})")
    overrides = {k[3:]: v for k, v in vars(args).items() if k.startswith("ov:") and v is not None}
    serve_argv = (["--config", args.config] if args.config else []) + [
        x for k, v in overrides.items() for x in (f"--{k}", str(v))]
    if args.k:
        serve_argv += ["--k", str(args.k)]
    # no server sees a prompt twice: mlx_lm.server's prompt cache would skip a repeated prompt's processing. Set A
    # goes to mlx_lm.server and mlx-pn serve's named model, set B to the other two kinds; 2 prompts per request
    texts = heldout_prompts(prepare_data(cfg, log=lambda *a: None), args.peer, args.ppl_tokens)
    if len(texts) < 4 * args.requests + 2:
        raise SystemExit(f"error: --requests {args.requests}: {args.peer}'s test split has {len(texts)} prompts of "
                         f"{args.ppl_tokens} tokens, {4 * args.requests + 2} needed; lower --requests or --ppl-tokens")
    ours_port, peer_port = _free_port(), _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    ours = _start([sys.executable, "-m", "recipes.serve", *serve_argv, "--port", str(ours_port),
                   "--min-confidence", str(args.min_confidence)], f"http://127.0.0.1:{ours_port}/health",
                  tmp / "ours.log")
    try:
        peer = _start([sys.executable, "-m", "mlx_pn.lm", "server", "--model", str(folder), "--host", "127.0.0.1",
                       "--port", str(peer_port)], f"http://127.0.0.1:{peer_port}/v1/models", tmp / "peer.log")
    except SystemExit:
        ours.terminate()
        raise
    body = {"max_tokens": max_tokens, "temperature": 0.0}
    # mlx_lm.server generates through its BatchGenerator unless a request has a seed: then through stream_generate,
    # as mlx-pn serve always does (it seeds every request); both are timed
    kinds = {"mlx_lm.server": (f"http://127.0.0.1:{peer_port}/v1/completions", body),
             "mlx_lm.server, seeded (stream_generate)": (f"http://127.0.0.1:{peer_port}/v1/completions",
                                                         body | {"seed": 0}),
             f"mlx-pn serve, model {args.peer}": (f"http://127.0.0.1:{ours_port}/v1/completions",
                                                   body | {"model": args.peer}),
             "mlx-pn serve, model auto": (f"http://127.0.0.1:{ours_port}/v1/completions", body | {"model": "auto"})}
    res = {k: [] for k in kinds}
    sets = {k: texts[(j % 2) * 2 * args.requests:] for j, k in enumerate(kinds)}  # A, B, A, B
    try:
        for k, (url, b) in kinds.items():  # warm-up (first-request compilation) on the two spare prompts
            _timed(url, b, (texts[-1], texts[-2]))
        for i in range(args.requests):  # in turn: the machine's load falls on every kind alike
            for k, (url, b) in kinds.items():
                res[k].append(_timed(url, b, (sets[k][2 * i], sets[k][2 * i + 1])))
    finally:
        for p in (ours, peer):
            p.terminate()
            p.wait(timeout=60)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), statistics.median(
        r[2] for r in v)) for k, v in res.items()}
    ttft0, tps0, _ = med["mlx_lm.server"]
    print(f"\n## Latency against mlx_lm.server on {folder} ({args.requests} streamed and {args.requests} whole "
          f"requests per row, in turn, each a {args.ppl_tokens}-token {args.peer} test prompt its server has not seen, "
          f"{max_tokens} greedy tokens; medians; load {os.getloadavg()[0]:.2f})\n")
    print("| server | time to first token (ms) | tokens/s | completion tokens | TTFT ratio | tokens/s ratio |")
    print("|---|---|---|---|---|---|")
    for k, (ttft, tps, n) in med.items():
        print(f"| {k} | {1e3 * ttft:.1f} | {tps:.0f} | {n:.0f} | {ttft / ttft0:.2f} | {tps / tps0:.2f} |")


# --- 6. memory: one trunk + LRU vs N separate models (slm-pn / slm-hn) ------------------------------------------


def memory_child(spec_path: str) -> None:
    """Run in a child process: serve spec["names"] one after the other (one 64-token forward each) either from the
    trunk (mode "trunk": ExpertCache of spec["cache"]; the median time to materialise an expert) or from separate
    folders (mode "separate"); print JSON."""
    import mlx.core as mx

    from mlx_pn.serve.experts import ExpertCache, weights_bytes

    spec = json.loads(Path(spec_path).read_text())
    x = mx.array([list(range(1, 65))])
    if spec["mode"] == "trunk":
        from mlx_pn.models.projected import load_projected

        trunk = load_projected(spec["trunk"])
        selects = {n: (np.asarray(s, np.float32) if isinstance(s, list) else s) for n, s in spec["selects"].items()}
        cache = ExpertCache(trunk, selects, spec["cache"])
        made = []
        for n in selects:
            t0, misses = time.perf_counter(), cache.misses
            expert = cache.get(n)  # specialize() evaluates the materialised weights
            if cache.misses > misses:
                made.append(1e3 * (time.perf_counter() - t0))
            mx.eval(expert(x))
        resident = [trunk, *[cache.get(n) for n in cache.cached()]]
        extra = {"materialise_ms": statistics.median(made)}
    elif spec["mode"] == "separate":
        from mlx_pn.models.build import load_model

        resident = [load_model(f) for f in spec["folders"]]
        for m in resident:
            mx.eval(m(x))
        extra = {}
    else:  # "none": the process's own footprint (python, mlx, mlx_pn), to read the others against
        resident, extra = [], {}
    print(json.dumps({"weights": weights_bytes(resident), **_rss(), **extra}))


def _rss() -> dict:
    """{"peak_rss", "rss"} of this process in bytes. Linux: /proc's VmHWM and VmRSS (getrusage's ru_maxrss keeps the
    forking parent's peak across exec); elsewhere ru_maxrss (bytes on macOS), the current RSS unknown (nan)."""
    import resource

    f = Path("/proc/self/status")
    if not f.exists():
        return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rss": float("nan")}
    status = dict(line.split(":", 1) for line in f.read_text().splitlines() if ":" in line)
    return {"peak_rss": int(status["VmHWM"].split()[0]) * 1024, "rss": int(status["VmRSS"].split()[0]) * 1024}


def _child(spec: dict, tmp: Path) -> dict:
    f = tmp / f"spec-{spec['mode']}-{len(spec.get('selects') or spec.get('folders') or [])}.json"
    f.write_text(json.dumps(spec))
    code = f"from tools.bench_serve import memory_child; memory_child({str(f)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=_child_env())
    if out.returncode:
        raise SystemExit(f"error: memory child ({spec['mode']}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(cfg, data, models, cache_size: int) -> None:
    """N experts from one trunk (+ LRU) vs N separate folders: the run's domains + generic, then every cluster."""
    from mlx_pn.methods.layout import pretrain_dir
    from mlx_pn.models.build import save_model
    from mlx_pn.models.projected import load_projected
    from mlx_pn.serve.experts import is_projected

    trunk_dir = pretrain_dir(cfg) / "final"
    if not is_projected(trunk_dir):
        raise SystemExit(f"error: --memory compares serving from a projected trunk, and {trunk_dir} is not one: use "
                         f"a slm-pn or slm-hn run (this one is {cfg.method})")
    trunk = load_projected(trunk_dir)
    run_selects = {n: m.extra["select"] for n, m in models.items() if m.experts is not None}
    sets = {f"the run's on-demand models ({', '.join(run_selects)})": run_selects,
            f"every cluster's expert (k = {trunk.pargs.k})": {f"cluster-{i}": i for i in range(trunk.pargs.k)}}
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-mem-"))
    base = _child({"mode": "none"}, tmp)
    p = trunk.pargs
    print(f"\n## Memory: experts from one resident trunk vs separate models ({cfg.model.preset} preset, k={p.k}, "
          f"h={p.h}, m={p.m}; --expert-cache {cache_size}; each way in its own process, one 64-token forward per "
          f"expert; a process that loads no model peaks at {base['peak_rss'] / 2**20:.0f} MB RSS; load "
          f"{os.getloadavg()[0]:.2f})\n")
    print("| experts served | N | trunk + LRU: weights MB | RSS / peak RSS MB | N separate models: weights MB "
          "| RSS / peak RSS MB | weights ratio (trunk / separate) | peak RSS ratio | materialising an expert (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, selects in sets.items():
        folders = []
        for n, sel in selects.items():  # each expert materialised once and saved: the folders N models would be
            f = tmp / "separate" / n
            if not f.exists():
                save_model(f, trunk.specialize(sel))
            folders.append(str(f))
        js = {n: (np.asarray(s).tolist() if np.ndim(s) else int(s)) for n, s in selects.items()}
        a = _child({"mode": "trunk", "trunk": str(trunk_dir), "selects": js, "cache": cache_size}, tmp)
        b = _child({"mode": "separate", "folders": folders}, tmp)
        print(f"| {label} | {len(selects)} | {a['weights'] / 2**20:.2f} | {a['rss'] / 2**20:.0f} / "
              f"{a['peak_rss'] / 2**20:.0f} | {b['weights'] / 2**20:.2f} | {b['rss'] / 2**20:.0f} / "
              f"{b['peak_rss'] / 2**20:.0f} | {a['weights'] / b['weights']:.2f} | "
              f"{a['peak_rss'] / b['peak_rss']:.2f} | {a['materialise_ms']:.1f} |")


if __name__ == "__main__":
    main()
