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
  4. the server's generated tokens/s over HTTP with 1 and 4 concurrent clients ("auto", 32 tokens each).

    python -m tools.bench_serve --config tiny --out /tmp/serve/run --data.max_docs 300 \
        --pretrain.steps 40 --finetune.steps 20 --k 4

Prompts are consecutive pieces of each test split (at most --limit per domain); order does not matter for
any figure here (each prompt is scored on its own), so the mixed set is not shuffled.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from mlx_pn.cli import build_parser as cli_parser, parse


def extra(p):
    g = p.add_argument_group("bench")
    g.add_argument("--k", type=int, default=None, help="the clustering to route by (default cluster.k)")
    g.add_argument("--limit", type=int, default=40, help="prompts per domain and length")
    g.add_argument("--ppl-tokens", type=int, default=128, help="tokens per prompt for the perplexity table")
    g.add_argument("--min-confidence", type=float, default=0.5, help="as mlx-pn serve --min-confidence")


def nll(model, ids: list[int]) -> tuple[float, int]:
    """(summed next-token NLL, number of predicted tokens) of ids under model."""
    import mlx.core as mx
    import mlx.nn as nn

    x = mx.array([ids])
    logits = model(x[:, :-1])
    loss = nn.losses.cross_entropy(logits.astype(mx.float32), x[:, 1:], reduction="sum")
    return float(loss.item()), len(ids) - 1


def main(argv=None):
    from tqdm import tqdm

    from mlx_pn.data.prepare import GENERIC, prepare_data
    from mlx_pn.serve.accuracy import heldout_prompts, routing_accuracy
    from mlx_pn.serve.models import load_run_models
    from mlx_pn.serve.router import load_router

    cfg, args = parse(cli_parser(__doc__, extra=extra), argv)
    data = prepare_data(cfg, log=lambda *a: None)
    domains = data.domain_names()
    router = load_router(cfg, data.tokenizer, k=args.k, min_confidence=args.min_confidence)
    models = load_run_models(cfg, log=lambda *a: None)
    missing = [n for n in [*domains, GENERIC] if n not in models or models[n].error]
    if missing:
        raise SystemExit(f"error: no usable model for {', '.join(missing)} under {cfg.out}; pretrain and "
                         f"specialize every domain first (see this file's docstring)")

    print(f"## Routing accuracy ({len(router.names)} candidates: generic + {len(domains)} domains; chance "
          f"{1 / len(router.names):.2f}), up to {args.limit} test prompts per domain\n")
    print("| prompt tokens | rule | " + " | ".join(domains) + " | macro |")
    print("|---|---|" + "---|" * (len(domains) + 1))
    for n in (64, 256):
        acc = routing_accuracy(router, data, domains, n, args.limit)
        for rule in ("hist", "centroid"):
            print(f"| {n} | {rule} | " + " | ".join(f"{acc[rule][d]:.2f}" for d in domains)
                  + f" | {acc[rule]['macro']:.2f} |")

    # 2. perplexity: every prompt scored by every model once; each column picks a model per prompt
    prompts = [(d, t) for d in domains for t in heldout_prompts(data, d, args.ppl_tokens, args.limit)]
    names = [*domains, GENERIC]
    scores, routed = [], []
    for d, text in tqdm(prompts, desc="perplexity", unit="prompt"):
        ids = data.tokenizer.encode(text)
        scores.append({m: nll(models[m].model, ids) for m in names})
        routed.append(router.route(text).domain)

    def macro(pick) -> float:
        per = {d: [scores[i][pick(i, dd)] for i, (dd, _) in enumerate(prompts) if dd == d] for d in domains}
        return float(np.mean([np.exp(sum(s for s, _ in v) / sum(n for _, n in v)) for v in per.values()]))

    single = {m: macro(lambda i, d, m=m: m) for m in domains}
    best = min(single, key=single.get)
    print(f"\n## Macro test perplexity, {len(prompts)} prompts of {args.ppl_tokens} tokens "
          f"(rule {router.rule}, --min-confidence {args.min_confidence})\n")
    print("| routed by | macro ppl |\n|---|---|")
    print(f"| auto (share sent to generic: {routed.count(GENERIC) / len(routed):.2f}) | "
          f"{macro(lambda i, d: routed[i]):.2f} |")
    print(f"| oracle (true domain) | {macro(lambda i, d: d):.2f} |")
    print(f"| generic model | {macro(lambda i, d: GENERIC):.2f} |")
    print(f"| best single specialist ({best}) | {single[best]:.2f} |")

    # 3. latency: the router's work per request vs a 32-token completion on the generic model
    from mlx_lm.generate import generate

    texts = [t for _, t in prompts[:: max(1, len(prompts) // 30)]]
    route_ms, gen_ms = [], []
    g = models[GENERIC]
    for text in texts:
        t0 = time.perf_counter()
        router.route(text)
        route_ms.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        generate(g.model, g.tokenizer, g.tokenizer.encode(text), max_tokens=32)
        gen_ms.append(1e3 * (time.perf_counter() - t0))
    r, q = statistics.median(route_ms), statistics.median(gen_ms)
    print(f"\n## Routing latency ({len(texts)} prompts of {args.ppl_tokens} tokens, medians)\n")
    print(f"routing {r:.2f} ms per request; a 32-token greedy completion on the generic model {q:.1f} ms; "
          f"routing adds {100 * r / q:.1f}% ({cfg.cluster.embedder} embedder)")

    concurrency(cfg, data, [t for _, t in prompts], args.k, args.min_confidence)


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


if __name__ == "__main__":
    main()
