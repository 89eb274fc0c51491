"""Serve a run's specialists behind one OpenAI-style endpoint; "auto" routes each request by its clusters.

    mlx-pn serve --config tiny --port 8080
    curl localhost:8080/v1/completions -d '{"prompt": "The court held", "max_tokens": 20}'

Models: every domain's export (OUT/export[-METHOD]/DOMAIN) or else its specialization's final/ model, and
the generic pretrained model. Endpoints: /v1/completions, /v1/chat/completions (both with "stream": true),
/v1/models, /health. "model": "auto" (the default) embeds the prompt with the run's embedder and routes it
to the domain it looks like (--route-rule centroid: nearest mean embedding; hist: likelihood under each
domain's cluster histogram), or to the generic model when the best is generic or below --min-confidence.
Each response carries its route (a "route" field and an X-MLX-PN-Route header). Needs `mlx-pn cluster`
for routing; without it "auto" answers with the generic model. A slm-pn / slm-hn run serves its generic model
and its domains without a specialization of their own from the projected network: one resident trunk, each
expert materialised when a request needs it and --expert-cache of them kept.
"""

from __future__ import annotations

import os
import sys

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import clear_errors


def extra(p):
    g = p.add_argument_group("serve")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    g.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    g.add_argument("--route-rule", default="centroid", choices=("centroid", "hist"),
                   help="how 'auto' scores domains: nearest mean embedding, or cluster-histogram likelihood")
    g.add_argument("--min-confidence", type=float, default=0.5,
                   help="below this routing confidence (0..1) 'auto' answers with the generic model")
    g.add_argument("--k", type=int, default=None, help="the clustering to route by (default cluster.k)")
    g.add_argument("--expert-cache", type=int, default=4,
                   help="slm-pn / slm-hn: experts kept materialised from the resident projected network (LRU)")
    g.add_argument("--ensemble", type=int, default=1, choices=(1, 2),
                   help="2: 'auto' mixes the two best-routed models' next-token distributions by their routing "
                        "scores (c-BTM's top-2; twice the compute per token)")


def build_parser():
    return cli_parser(__doc__, extra=extra)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    if not 0.0 <= args.min_confidence <= 1.0:
        parser.error(f"--min-confidence {args.min_confidence}: must be between 0 and 1")
    if args.expert_cache < 1:
        parser.error(f"--expert-cache {args.expert_cache}: keep at least 1 materialised expert")
    with clear_errors():
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.serve.app import build_app
        from mlx_pn.serve.server import make_server, serve_forever

        data = prepare_data(cfg, log=lambda *a: None)
        try:
            app = build_app(cfg, data.tokenizer, args.route_rule, args.min_confidence, args.k,
                            expert_cache=args.expert_cache, ensemble=args.ensemble)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        serve_forever(make_server(app, args.host, args.port))
    # stopped: nothing is left to write; end here rather than in the interpreter's shutdown, where MLX's teardown
    # beside the idle worker thread hung once for over a minute on a loaded machine (a Ctrl-C that did not end)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
