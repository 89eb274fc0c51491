"""The HTTP endpoint: OpenAI-style completions and chat for a run's specialists, each request routed.

    GET  /health               {"status": "ok", "models": {name: "ok" or its load error}}
    GET  /v1/models            one entry per model (the specialists, "generic") plus "auto"
    POST /v1/completions       {"prompt", "model"="auto", "max_tokens", "temperature", "top_p", "seed", "stop", "stream"}
    POST /v1/chat/completions  {"messages", ...the same}

Request and response bodies follow mlx-lm's server (mlx_lm/server.py, itself OpenAI's format); generation is
mlx-lm's ``stream_generate`` with its ``make_sampler``. Every response names its route: a "route" field
({"model", "domain", "score", "confident", "best", "rule"}, and "ensemble": [{"model", "weight"}] under
--ensemble 2) and an ``X-MLX-PN-Route`` header. mlx-lm's
APIHandler is not reused as a class: it is bound to its ModelProvider (one model, swapped per request) and
its batching ResponseGenerator; this handler keeps every model resident and only routes.

Errors: an unknown model -> 404 listing the known ones; a prompt longer than the model's context, or a field of
the wrong type -> 400; a model that failed to load or to generate -> 500 for that request only. Connections are
threads (ThreadingHTTPServer); routing and generation run on one worker thread, one request at a time.
"""

from __future__ import annotations

import json
import math
import signal
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mlx_pn.serve.worker import Worker

AUTO = "auto"
ROUTE_HEADER = "X-MLX-PN-Route"


class RequestError(Exception):
    """A request the server refuses: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def chat_prompt(messages: list[dict], tokenizer, use_template: bool) -> str:
    """The prompt text of a chat: the tokenizer's chat template when it has one (as exported), else the
    format mlx-pn trains chat on, ``role: content`` lines ending with ``assistant:``."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError(400, "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    if use_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


class App:
    """The served models, the router and the one thread that runs their MLX work (mlx_pn.serve.worker). models:
    {name: Served}; router: a Router or None (then "auto" goes to the generic model); generic: the fallback name."""

    def __init__(self, models: dict, router=None, generic: str = "generic", ensemble: int = 1):
        if ensemble not in (1, 2):
            raise ValueError(f"--ensemble {ensemble}: 1 (the best-routed model) or 2 (c-BTM's top-2 mixture)")
        self.models, self.router, self.generic, self.ensemble = models, router, generic, ensemble
        self.worker = Worker()

    def known(self) -> list[str]:
        return [*self.models, AUTO]

    def pick(self, name: str, text: str) -> tuple[str, dict]:
        """(model name, route dict) for a request naming `name` (or "auto") with routing text `text`."""
        if name == AUTO and self.router is not None and self.ensemble == 2:
            return self._pick_top2(text)
        if name == AUTO:
            if self.router is None:
                target, route = self.generic, {"rule": "none", "score": 0.0, "confident": False, "best": self.generic}
            else:
                r = self.worker.call(lambda: self.router.route(text).as_dict())  # the embedder may run MLX
                target, route = r["domain"], r
            if target not in self.models:  # the best domain has no specialist: the generic model answers
                target = self.generic
        elif name in self.models:
            target, route = name, {"rule": "named", "score": 1.0, "confident": True, "best": name}
        else:
            raise RequestError(404, f"unknown model '{name}'; known models: {', '.join(self.known())}")
        if target not in self.models:
            raise RequestError(500, f"no model '{target}' to answer with (known: {', '.join(self.models)})")
        return target, {"model": target, **route}

    def _pick_top2(self, text: str) -> tuple[str, dict]:
        """c-BTM's top-2 route: the two best corpora that have a usable model, weighted by their scores."""
        from mlx_pn.serve.ensemble import top2

        p = self.worker.call(lambda: self.router.scores(text)[self.router.rule])
        usable = [i for i, n in enumerate(self.router.names) if n in self.models and not self.models[n].error]
        if not usable:
            raise RequestError(500, f"no usable model to answer with (known: {', '.join(self.models)})")
        pair = top2(p[usable], [self.router.names[i] for i in usable])
        best, score = pair[0]
        route = {"model": best, "domain": best, "score": round(score, 4), "confident": True, "best": best,
                 "rule": f"{self.router.rule}+top2", "ensemble": [{"model": n, "weight": round(w, 4)} for n, w in pair]}
        return best, route

    def generate(self, target: str, prompt: str, body: dict, ensemble: list[dict] | None = None):
        """Yield mlx-lm GenerationResponses of model `target` (or of the mixture of the `ensemble` route's models)
        for `prompt`, generated on the worker thread."""
        import mlx.core as mx
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_sampler

        served = self.models[target]
        members = [self.models[e["model"]] for e in ensemble or []]
        for s in [served, *members]:
            if s.error:
                raise RequestError(500, f"model '{s.name}' is unavailable: {s.error}")
        ids = served.tokenizer.encode(prompt)
        if not ids:
            raise RequestError(400, "the prompt is empty; send at least one token of text")
        if len(ids) >= served.context:
            raise RequestError(400, f"the prompt has {len(ids)} tokens but model '{target}' takes at most "
                                    f"{served.context - 1}; shorten the prompt")
        key = "max_tokens" if "max_tokens" in body else "max_completion_tokens"
        max_tokens = _number(body, key, 64, int)
        if max_tokens < 1:
            raise RequestError(400, f"'{key}' must be >= 1, got {max_tokens}")
        max_tokens = min(max_tokens, served.context - len(ids))
        temperature, top_p = _number(body, "temperature", 0.0, float), _number(body, "top_p", 1.0, float)
        if temperature < 0 or not 0 < top_p <= 1:
            raise RequestError(400, f"'temperature' must be >= 0 and 'top_p' in (0, 1], got {temperature} and {top_p}")
        sampler, seed = make_sampler(temperature, top_p), _number(body, "seed", 0, int)

        def run():
            mx.random.seed(seed)
            if len(members) > 1:
                from mlx_pn.serve.ensemble import Mixture

                model = Mixture([m.load() for m in members], [e["weight"] for e in ensemble])
            else:
                model = served.load()  # resident, or materialised now from a projected trunk
            yield from stream_generate(model, served.tokenizer, ids, max_tokens=max_tokens, sampler=sampler)

        yield from self.worker.stream(run)


def _number(body: dict, key: str, default, cast):
    """body[key] as an int or float (a bool or a numeric string is refused: 400 naming the field)."""
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (cast is int and v != int(v)):
        raise RequestError(400, f"'{key}' must be {'an integer' if cast is int else 'a number'}, got {v!r}")
    return cast(v)


def _stops(body: dict) -> list[str]:
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]


class Handler(BaseHTTPRequestHandler):
    app: App  # set by make_server on a subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: one line per request would flood the terminal
        pass

    def _send_json(self, status: int, obj: dict, route: dict | None = None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if route:
            self.send_header(ROUTE_HEADER, _route_header(route))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str):
        self._send_json(status, {"error": {"message": message, "type": HTTPStatus(status).phrase, "code": status}})

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":
            self._send_json(200, {"status": "ok", "models": {n: s.error or "ok" for n, s in self.app.models.items()}})
        elif path == "/v1/models":
            now = int(time.time())
            self._send_json(200, {"object": "list", "data": [
                {"id": n, "object": "model", "created": now, "owned_by": "mlx-pn"} for n in self.app.known()]})
        else:
            self._error(404, f"no such endpoint {path}; GET /health or /v1/models")

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._error(404, f"no such endpoint {path}; POST /v1/completions or /v1/chat/completions")
            return
        try:
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as e:
                raise RequestError(400, f"the request body is not JSON ({e})") from None
            if not isinstance(body, dict):
                raise RequestError(400, "the request body must be a JSON object")
            self._complete(body, chat=path.endswith("chat/completions"))
        except RequestError as e:
            self._error(e.status, str(e))
        except Exception as e:  # noqa: BLE001 - one failing request (or specialist) must not stop the server
            self._error(500, f"generation failed: {type(e).__name__}: {e}")

    def _complete(self, body: dict, chat: bool):
        name = str(body.get("model") or AUTO)
        if chat:
            messages = body.get("messages")
            chat_prompt(messages, None, False)  # validates before routing
            text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role", "user") == "user")
        else:
            text = body.get("prompt")
            if not isinstance(text, str):
                raise RequestError(400, "'prompt' must be a string")
        target, route = self.app.pick(name, text)
        served = self.app.models[target]
        prompt = chat_prompt(body["messages"], served.tokenizer, served.chat_template) if chat else text
        stops = _stops(body)
        gen = self.app.generate(target, prompt, body, route.get("ensemble"))
        first = next(gen, None)  # errors before the first token (bad prompt, broken model) are plain statuses
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}"
        meta = {"id": rid, "created": int(time.time()), "model": target, "route": route}
        try:
            self._respond(gen, first, meta, chat, stops, bool(body.get("stream")))
        finally:
            gen.close()  # a client gone mid-stream (or a stop string met) stops the generation

    def _respond(self, gen, first, meta, chat, stops, stream):
        route = meta["route"]
        if stream:
            self._stream(gen, first, meta, chat, stops)
        else:
            text, finish, last = _collect(gen, first, stops)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                      if chat else {"index": 0, "text": text, "finish_reason": finish, "logprobs": None})
            usage = {"prompt_tokens": last.prompt_tokens if last else 0,
                     "completion_tokens": last.generation_tokens if last else 0}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            obj = "chat.completion" if chat else "text_completion"
            self._send_json(200, {**meta, "object": obj, "choices": [choice], "usage": usage}, route)

    def _stream(self, gen, first, meta, chat, stops):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header(ROUTE_HEADER, _route_header(meta["route"]))
        self.end_headers()
        self.close_connection = True
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(payload):
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        def chunk(text, finish):
            c = ({"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish} if chat
                 else {"index": 0, "text": text, "finish_reason": finish})
            event({**meta, "object": obj, "choices": [c]})

        try:
            sent, finish = "", None
            for r in _with_first(gen, first):
                full = sent + r.text
                cut = _stop_at(full, stops)
                if cut is not None:
                    chunk(full[len(sent):cut], None)
                    finish = "stop"
                    break
                if r.text:
                    chunk(r.text, None)
                sent, finish = full, r.finish_reason
            chunk("", finish or "length")
        except Exception as e:  # noqa: BLE001 - headers are sent: report the failure in the stream
            event({"error": {"message": f"generation failed: {type(e).__name__}: {e}", "code": 500}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _with_first(gen, first):
    if first is not None:
        yield first
        yield from gen


def _stop_at(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _collect(gen, first, stops):
    """(text, finish_reason, last response) of a whole generation, cut at the first stop string."""
    text, last, finish = "", None, None
    for r in _with_first(gen, first):
        text += r.text
        last, finish = r, r.finish_reason
        cut = _stop_at(text, stops)
        if cut is not None:
            return text[:cut], "stop", last
    return text, finish or "length", last


def _route_header(route: dict) -> str:
    mix = "".join(f"; {e['model']}={e['weight']:.4f}" for e in route.get("ensemble") or [])
    return (f"{route['model']}; score={route.get('score', 0):.4f}; rule={route.get('rule')}; "
            f"confident={str(route.get('confident')).lower()}{mix}")


def make_server(app: App, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer answering for `app` (port 0: a free port, read it from server.server_address)."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_forever(server: ThreadingHTTPServer, log=print) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the socket (in-flight requests are daemon threads)."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    host, port = server.server_address[:2]
    log(f"[serve] listening on http://{host}:{port}/v1 (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("[serve] stopping")
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, old)
