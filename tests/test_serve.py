"""mlx-pn serve on the tiny run: routing accuracy, the HTTP endpoints over urllib, the error cases, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # a module fixture specializes three domains; a subprocess server

from conftest import REPO, TINY

QUIET = {"log": lambda *a: None}


@pytest.fixture(scope="module")
def served(pretrained, clustered, tmp_path_factory):
    """(cfg, data, app, base URL): the tiny run's three specialists + generic behind a server thread on a free port.
    On its own copy of the session's run (data, clusters, pretraining): other tests specialize the shared run with
    other settings, and a specialization made with other settings is (rightly) refused."""
    import copy
    import shutil

    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.methods import specialize
    from mlx_pn.serve.app import build_app
    from mlx_pn.serve.server import make_server

    shared, _, _ = pretrained
    out = tmp_path_factory.mktemp("served")
    shutil.copytree(shared.data_dir, out / "data")
    shutil.copytree(f"{shared.out}/pretrain", out / "pretrain", ignore=shutil.ignore_patterns("checkpoints"))
    cfg = copy.deepcopy(shared)
    cfg.out = str(out)
    data = prepare_data(cfg, **QUIET)
    for d in data.domain_names():
        specialize(cfg, data, d, **QUIET)
    app = build_app(cfg, data.tokenizer, k=4, **QUIET)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield cfg, data, app, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def call(url, body=None, timeout=60):
    """(status, headers, text) of a GET (body None) or a JSON POST."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def sse_events(text):
    lines = [ln[len("data: "):] for ln in text.split("\n\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]", lines[-3:]
    return [json.loads(x) for x in lines[:-1]]


def test_routing_beats_chance_on_each_domains_test_text(served):
    from mlx_pn.serve.accuracy import routing_accuracy

    cfg, data, app, _ = served
    chance = 1 / len(app.router.names)  # generic is a candidate too
    for n in (64, 256):
        acc = routing_accuracy(app.router, data, data.domain_names(), n, limit=20)
        assert acc["centroid"]["macro"] >= 0.8, (n, acc)
        assert min(acc["centroid"][d] for d in data.domain_names()) > chance, (n, acc)
        assert acc["hist"]["macro"] > chance, (n, acc)


def test_auto_routes_each_domains_test_documents_to_its_specialist(served):
    from mlx_pn.serve.accuracy import heldout_prompts

    cfg, data, app, url = served
    for d in data.domain_names():
        routes = []
        for prompt in heldout_prompts(data, d, 200, limit=4):  # 256 would fill the tiny context
            status, headers, text = call(url + "/v1/completions", {"prompt": prompt, "max_tokens": 1})
            assert status == 200, text
            route = json.loads(text)["route"]
            assert headers["X-MLX-PN-Route"].startswith(route["model"] + ";")
            routes.append(route["model"])
        assert routes.count(d) >= 3, (d, routes)


def test_named_completion_is_the_specialists_greedy_generation(served):
    from mlx_lm.generate import generate

    cfg, data, app, url = served
    status, headers, text = call(url + "/v1/completions",
                                 {"model": "legal", "prompt": "The court held that", "max_tokens": 8})
    assert status == 200, text
    r = json.loads(text)
    assert r["model"] == "legal" and r["route"]["rule"] == "named" and "legal;" in headers["X-MLX-PN-Route"]
    m = app.models["legal"]
    ids = m.tokenizer.encode("The court held that")
    assert r["choices"][0]["text"] == generate(m.model, m.tokenizer, ids, max_tokens=8)
    assert r["usage"]["completion_tokens"] == 8 and r["usage"]["prompt_tokens"] == len(ids)


def test_chat_streams_the_same_text_it_returns_whole(served):
    cfg, data, app, url = served
    body = {"model": "drama", "messages": [{"role": "user", "content": "Enter the king."}], "max_tokens": 8}
    status, _, text = call(url + "/v1/chat/completions", body)
    assert status == 200, text
    whole = json.loads(text)
    assert whole["object"] == "chat.completion"
    status, headers, text = call(url + "/v1/chat/completions", body | {"stream": True})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = sse_events(text)
    assert all(e["object"] == "chat.completion.chunk" and e["route"]["model"] == "drama" for e in events)
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert streamed == whole["choices"][0]["message"]["content"] and streamed
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    # without a chat template the prompt is the training format "user: P\nassistant:"
    m = app.models["drama"]
    assert not m.chat_template and whole["usage"]["prompt_tokens"] == len(
        m.tokenizer.encode("user: Enter the king.\nassistant:"))


def test_completion_streaming(served):
    cfg, data, app, url = served
    body = {"model": "medical", "prompt": "The patient", "max_tokens": 6}
    whole = json.loads(call(url + "/v1/completions", body)[2])["choices"][0]["text"]
    events = sse_events(call(url + "/v1/completions", body | {"stream": True})[2])
    assert "".join(e["choices"][0]["text"] for e in events) == whole


def test_models_and_health(served):
    cfg, data, app, url = served
    status, _, text = call(url + "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(text)["data"]] == [*data.domain_names(), "generic", "auto"]
    status, _, text = call(url + "/health")
    assert status == 200 and set(json.loads(text)["models"].values()) == {"ok"}


def test_unknown_model_is_404_listing_the_known_ones(served):
    status, _, text = call(served[3] + "/v1/completions", {"model": "nope", "prompt": "x"})
    assert status == 404
    msg = json.loads(text)["error"]["message"]
    assert "'nope'" in msg and all(n in msg for n in ("drama", "legal", "medical", "generic", "auto"))


def test_prompt_longer_than_the_context_is_400(served):
    cfg, data, app, url = served
    ctx = app.models["legal"].context
    status, _, text = call(url + "/v1/completions", {"model": "legal", "prompt": "the " * (2 * ctx)})
    assert status == 400 and "shorten the prompt" in json.loads(text)["error"]["message"]
    status, _, text = call(url + "/v1/completions", b"{not json")
    assert status == 400 and "not JSON" in text


@pytest.mark.parametrize("field,value,says", [
    ("max_tokens", "ten", "'max_tokens' must be an integer"), ("max_tokens", 2.5, "'max_tokens' must be an integer"),
    ("max_tokens", 0, "'max_tokens' must be >= 1"), ("temperature", "hot", "'temperature' must be a number"),
    ("temperature", -1, "'temperature' must be >= 0"), ("top_p", 0, "'top_p' in (0, 1]"),
    ("seed", True, "'seed' must be an integer")])
def test_a_field_of_the_wrong_type_is_400_naming_it(served, field, value, says):
    status, _, text = call(served[3] + "/v1/completions", {"model": "legal", "prompt": "The court", field: value})
    assert status == 400 and says in json.loads(text)["error"]["message"], text


def test_a_failing_specialist_fails_only_its_requests(served):
    cfg, data, app, url = served

    class Broken:
        layers = []

        def __call__(self, *a, **k):
            raise RuntimeError("weights on fire")

    good = app.models["medical"]
    app.models["medical"] = type(good)("medical", good.source, Broken(), good.tokenizer, good.context)
    try:
        status, _, text = call(url + "/v1/completions", {"model": "medical", "prompt": "The patient"})
        assert status == 500 and "weights on fire" in text
        status, _, text = call(url + "/v1/completions", {"model": "medical", "prompt": "The patient", "stream": True})
        assert status == 500 and "weights on fire" in text  # failed before its first token: a plain status
        app.models["medical"] = type(good)("medical", good.source, error="medical/final: cannot load (truncated)")
        status, _, text = call(url + "/v1/completions", {"model": "medical", "prompt": "The patient"})
        assert status == 500 and "cannot load (truncated)" in text
        assert "cannot load" in json.loads(call(url + "/health")[2])["models"]["medical"]
    finally:
        app.models["medical"] = good
    status, _, _ = call(url + "/v1/completions", {"model": "legal", "prompt": "The court", "max_tokens": 2})
    assert status == 200  # the server is still up, and the lock was released


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_and_ctrl_c_stop_the_server_cleanly(served, sig):
    cfg, *_ = served
    env = os.environ | {"PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-u", "-m", "recipes.serve", "--config", str(TINY), "--out", str(cfg.out),
           "--data.max_docs", "300", "--pretrain.steps", "40", "--finetune.steps", "20", "--k", "4", "--port", "0"]
    # as from a terminal: a test run started in the background (`cmd &` without job control, as CI may be) hands its
    # children SIGINT ignored, and Python then installs no Ctrl-C handler; a user's server in a terminal has one
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in p.stdout:  # bounded by the timeout below
            lines.append(line)
            if "listening on" in line:
                break
        assert any("listening on" in ln for ln in lines), "".join(lines)
        base = lines[-1].split("listening on ")[1].split()[0].removesuffix("/v1")
        assert call(base + "/health")[0] == 200
        p.send_signal(sig)
        rest = p.communicate(timeout=60)[0]
        assert p.returncode == 0 and "stopping" in rest, rest
    finally:
        if p.poll() is None:
            p.kill()


def test_low_confidence_routes_to_the_generic_model(served):
    cfg, data, app, url = served
    from mlx_pn.serve.accuracy import heldout_prompts

    prompt = heldout_prompts(data, "legal", 128, limit=1)[0]
    old = app.router.min_confidence
    app.router.min_confidence = 1.01  # no softmax reaches it: every route is unconfident
    try:
        status, headers, text = call(url + "/v1/completions", {"prompt": prompt, "max_tokens": 1})
    finally:
        app.router.min_confidence = old
    route = json.loads(text)["route"]
    assert status == 200 and route["model"] == "generic" and route["confident"] is False
    assert route["best"] == "legal" and "confident=false" in headers["X-MLX-PN-Route"]


def test_model_sources_prefer_the_export_and_keep_load_errors(tiny_run, tmp_path):
    from mlx_pn.serve.models import load_served, model_sources

    import dataclasses

    cfg = dataclasses.replace(tiny_run[0], out=str(tmp_path))
    (tmp_path / "export" / "legal").mkdir(parents=True)
    (tmp_path / "export" / "legal" / "config.json").write_text("{}")
    for d in ("legal", "drama"):
        (tmp_path / "specialize" / d / "final").mkdir(parents=True)
        (tmp_path / "specialize" / d / "final" / "model.safetensors").write_bytes(b"")
    assert model_sources(cfg) == {"legal": tmp_path / "export" / "legal",
                                  "drama": tmp_path / "specialize" / "drama" / "final"}
    broken = load_served("legal", tmp_path / "export" / "legal", tmp_path)
    assert broken.model is None and str(tmp_path / "export" / "legal") in broken.error

