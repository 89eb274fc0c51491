"""The docs stand on their own: every doc that code, configs, --help or the docs name exists in the repository,
and nothing points outside it (a wheel or a clone has no sibling folders)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt"}
# A repo path to a doc ("docs/x.md"), a relative Markdown link inside docs/ ("](x.md)"), and anything outside.
DOC_PATH = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)")
DOC_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#[\w.-]*)?\)")
OUTSIDE = re.compile(r"\.\./shared|shared/(?:docs|tools)/|\b[\w-]+-notes\.md|\b(?:DESIGN|STYLE)\.md")


def _texts():
    roots = [REPO / "mlx_pn", REPO / "recipes", REPO / "tools", DOCS, REPO / "README.md", REPO / "pyproject.toml"]
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for f in files:
            if f.is_file() and f.suffix in SUFFIXES and "__pycache__" not in f.parts:
                yield f, f.read_text(encoding="utf-8", errors="replace")


def find_problems(files):
    """(file, line, what) for each reference to a doc that does not exist or to a place outside the repository."""
    problems = []
    for f, text in files:
        for n, line in enumerate(text.splitlines(), 1):
            for name in DOC_PATH.findall(line):
                if not (DOCS / name).is_file():
                    problems.append((f, n, f"docs/{name} does not exist"))
            if f.parent == DOCS:
                for name in DOC_LINK.findall(line):
                    if not (DOCS / name).is_file():
                        problems.append((f, n, f"link to {name}: no docs/{name}"))
            for m in OUTSIDE.findall(line):
                problems.append((f, n, f"points outside the repository: {m}"))
    return problems


def test_every_named_doc_exists_and_nothing_points_outside():
    problems = find_problems(_texts())
    assert not problems, "\n".join(f"{f.relative_to(REPO)}:{n}: {what}" for f, n, what in problems)


def test_the_check_catches_a_missing_doc_and_an_outside_path():
    bad = [(REPO / "mlx_pn" / "x.py", 'see docs/no-such-doc.md and ../shared/docs/DESIGN.md, paper-notes.md'),
           (DOCS / "x.md", "[a](missing.md) [b](methods.md)")]
    found = [what for _, _, what in find_problems(bad)]
    assert "docs/no-such-doc.md does not exist" in found
    assert any("../shared" in w for w in found) and any("paper-notes.md" in w for w in found)
    assert any("missing.md" in w for w in found) and not any("methods.md" in w for w in found)


def test_the_recipes_help_names_only_docs_that_exist(capsys):
    import pytest

    from mlx_pn.recipes import prepare

    with pytest.raises(SystemExit):
        prepare.build_parser().parse_args(["--help"])
    names = DOC_PATH.findall(capsys.readouterr().out)
    assert names, "recipes.prepare --help names its data-sources doc"
    assert all((DOCS / n).is_file() for n in names)
