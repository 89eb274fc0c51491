"""Property-based tests: whatever the config file, the flags or the corpus files hold, the only errors are
ConfigError / DataError (or argparse's exit 2) with a message: never a traceback from deep inside."""

import gzip
import io
import json
import string
from contextlib import redirect_stderr

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlx_pn.cli import build_parser, parse
from mlx_pn.config import Config, ConfigError, leaf_keys, load_config
from mlx_pn.data.sources import DataError, load_documents, split_documents

KEYS = sorted(leaf_keys(Config))
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["tiny", "slm", "1e5", "3e-4", "yes", "nan", "inf", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
names = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS), st.text(max_size=12))


def _nested(flat: dict) -> dict:
    """{'pretrain.lr': v} -> {'pretrain': {'lr': v}} (later keys win where they clash)."""
    out: dict = {}
    for key, v in flat.items():
        *path, last = str(key).split(".")
        d = out
        for p in path:
            if not isinstance(d.get(p), dict):
                d[p] = {}
            d = d[p]
        d[last] = v
    return out


def _message(e: Exception) -> str:
    text = str(e)
    assert text and "Traceback" not in text
    return text


@FUZZ
@given(st.dictionaries(names, values, max_size=5))
def test_config_files_with_random_keys_and_values(tmp_path_factory, flat):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(_nested(flat), allow_unicode=True))
    try:
        load_config(path)
    except ConfigError as e:
        assert str(path) in _message(e) or "must" in str(e) or "unknown" in str(e)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.sampled_from(["pretrain: [1, 2\n", "a: b: c\n", "- 1\n- 2\n", "{{{", "pretrain:\n  lr: .inf\n",
                                  "data:\n  domains: {x: 5}\n", "data:\n  domains: [a, b]\n", "!!python/object:os.system\n",
                                  "out: &a [*a]\n", "5\n", "null\n", "''\n"])))
def test_config_files_with_random_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    try:
        load_config(path)
    except ConfigError as e:
        _message(e)


@FUZZ
@given(st.binary(max_size=64))
def test_config_file_with_random_bytes(tmp_path_factory, data):
    for suffix in (".yaml", ".json"):
        path = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigError as e:
            assert str(path) in _message(e) or "must" in str(e) or "unknown" in str(e)


flag_values = st.one_of(st.text(max_size=12), st.sampled_from(["1e999", "1e-5", "-0", "nan", "inf", "{", "{}", "[1]",
                                                                 '{"a": 1}', "a=b,c", "=", ";", "true", "None"]))
argv_items = st.lists(st.one_of(st.sampled_from([f"--{k}" for k in KEYS] + ["--config", "--help-me", "-x", "--"]),
                                flag_values), max_size=8)


@FUZZ
@given(argv_items)
def test_command_lines(argv):
    """parse(): a config, or exit status 2 with a message; --help exits 0."""
    parser = build_parser("fuzz")
    err = io.StringIO()
    try:
        with redirect_stderr(err):
            parse(parser, argv)
    except SystemExit as e:
        assert e.code in (0, 2), e.code
        if e.code == 2:
            assert "error" in err.getvalue()


# --- data loading ---------------------------------------------------------------------------------

docs_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80)
json_lines = st.one_of(
    st.dictionaries(st.sampled_from(["text", "id", "body"]),
                    st.one_of(docs_text, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
                    max_size=3).map(json.dumps),
    st.just('{"text": "\\ud800 lone"}'), st.just("[" * 50 + "]" * 50), st.just('{"text": "x"'), docs_text,
)
FILES = {".txt": st.one_of(docs_text.map(str.encode), st.binary(max_size=80)),
         ".md": docs_text.map(str.encode),
         ".jsonl": st.one_of(st.lists(json_lines, max_size=4).map(lambda ls: "\n".join(ls).encode()),
                             st.binary(max_size=80)),
         ".jsonl.gz": st.one_of(st.lists(json_lines, max_size=3).map(lambda ls: gzip.compress("\n".join(ls).encode())),
                                st.binary(max_size=40),
                                st.lists(json_lines, min_size=1, max_size=3).map(
                                    lambda ls: gzip.compress("\n".join(ls).encode())[:-5]))}
corpus_files = st.lists(st.sampled_from(sorted(FILES)).flatmap(lambda s: st.tuples(st.just(s), FILES[s])),
                        min_size=1, max_size=4)


@FUZZ
@given(corpus_files, st.booleans())
def test_corpus_files_with_random_content(tmp_path_factory, files, as_folder):
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for i, (suffix, data) in enumerate(files):
        p = folder / f"f{i}{suffix}"
        p.write_bytes(data)
        paths.append(str(p))
    spec = str(folder) if as_folder else ",".join(paths)
    try:
        docs = load_documents(spec, "data.domains.fuzz")
    except DataError as e:
        msg = _message(e)
        assert "data.domains.fuzz" in msg or str(folder) in msg, msg
        return
    assert docs and all(d.text and d.text == d.text.strip() for d in docs)
    for d in docs:
        d.text.encode("utf-8")  # what the tokenizer and the shard writer do next
    splits = split_documents(docs, 0.05, 0.05)
    assert sum(len(v) for v in splits.values()) == len(docs)


@pytest.mark.parametrize("text", ["", " ", "\x00", "a" * 10_000])
def test_single_texts(tmp_path, text):
    (tmp_path / "a.txt").write_text(text)
    try:
        docs = load_documents(str(tmp_path / "a.txt"))
        assert docs[0].text == text.strip()
    except DataError as e:
        assert "no non-empty documents" in _message(e)


def test_printable_names_in_messages(tmp_path):
    """A file name with odd characters still appears in the message."""
    name = "ünïcode " + string.punctuation.replace("/", "").replace(",", "") + ".txt"  # "," separates specs
    (tmp_path / name).write_bytes(b"\xff")
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_documents(str(tmp_path / name))
