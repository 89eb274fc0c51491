"""Sources that are not plain text files: devices, FIFOs, UTF-16, empty given splits, and a
domain that is the generic text again. Each is one line naming the file (and field) with the fix."""

import json
import os
import threading

import pytest

from mlx_pn.data.sources import DataError, fingerprint, load_documents, load_splits


def _within(seconds, fn):
    """fn() run in a thread: its outcome, or a failure if it is still running after `seconds` (a hang)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001  (handed to the test)
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung"
    return box


@pytest.mark.parametrize("reader", [lambda p: fingerprint(p, field="data.domains.z"),
                                    lambda p: load_documents(p, "data.domains.z")])
@pytest.mark.parametrize("kind", ["zero_symlink", "fifo"])
def test_a_device_or_fifo_given_directly_is_one_line_not_a_hang(tmp_path, kind, reader):
    path = tmp_path / "zero.txt"
    if kind == "zero_symlink":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    box = _within(10, lambda: reader(str(path)))
    e = box.get("error")
    assert isinstance(e, DataError), box
    assert "data.domains.z" in str(e) and "zero.txt" in str(e) and "or a folder of them" in str(e)
    assert ("a device" if kind == "zero_symlink" else "a named pipe (FIFO)") in str(e) and "\n" not in str(e)


@pytest.mark.parametrize("bom", [True, False])
def test_utf16_file_gets_utf16_advice(tmp_path, bom):
    text = "A document in UTF-16.\nSecond line."
    raw = text.encode("utf-16") if bom else text.encode("utf-16-le")
    (tmp_path / "u.txt").write_bytes(raw)
    with pytest.raises(DataError, match=r"u.txt: UTF-16 text .*not UTF-8; .*iconv -f utf-16 -t utf-8"):
        load_documents(str(tmp_path / "u.txt"))
    (tmp_path / "l.txt").write_bytes("caf\xe9 au lait".encode("latin1"))
    with pytest.raises(DataError, match="iconv -f latin1"):
        load_documents(str(tmp_path / "l.txt"))


def test_an_empty_given_valid_jsonl_says_it_is_empty(tmp_path):
    folder = tmp_path / "law"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"train doc {i}"}) + "\n" for i in range(20)))
    (folder / "valid.jsonl").write_text("")
    with pytest.raises(DataError, match=r"data.domains.law: .*law/valid.jsonl is empty .*delete it to carve valid"):
        load_splits(str(folder), "data.domains.law", 0.1, 0.1)
    # an empty test.jsonl with no test split wanted is fine
    (folder / "valid.jsonl").write_text(json.dumps({"text": "held out"}) + "\n")
    (folder / "test.jsonl").write_text("")
    splits, _ = load_splits(str(folder), "data.domains.law", 0.1, 0.0)
    assert len(splits["valid"]) == 1 and splits["test"] == []


def test_a_domain_made_of_generic_documents_is_warned_about(tmp_path):
    from conftest import tiny_config

    from mlx_pn.data.prepare import prepare_data

    gen = tmp_path / "gen"
    gen.mkdir()
    docs = load_documents("bundled:generic", max_docs=80)
    for i, d in enumerate(docs):
        (gen / f"{i:03d}.txt").write_text(d.text)
    cfg = tiny_config(tmp_path / "run", **{"data.generic": gen, "data.domains": f"copy={gen}", "data.vocab_size": 400})
    lines = []
    prepare_data(cfg, log=lines.append)
    warned = [x for x in lines if "warning: copy" in x]
    assert len(warned) == 1 and "every one of its documents is also in the generic text" in warned[0]
    assert not any("warning: generic" in x for x in lines)
