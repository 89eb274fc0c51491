"""Never write into what the library did not create (issue 23): every command claims its output folders (--out,
--data.dir) through mlx_pn.io.claim_output before it writes anything, so a user's own files under them are never
replaced, `--out /` and a folder inside the installed package write nothing, and a file, a path too long for the
file system are one line (exit 2)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from conftest import TINY

USER_FILES = {"pretrain/summary.json": '{"mine": 1}', "pretrain/metrics.jsonl": '{"loss": 9}\n',
              "corpus/manifest.json": '{"my": "manifest"}', "corpus/report.md": "# my report\n"}


def _run(recipe: str, argv: list[str], capsys) -> tuple[int, str]:
    import importlib

    mod = importlib.import_module(f"recipes.{recipe}")
    with pytest.raises(SystemExit) as e:
        mod.main(["--config", str(TINY), *argv])
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["prepare", "pretrain", "quickstart"])
def test_a_users_own_files_under_out_are_never_replaced(tmp_path, capsys, recipe):
    for rel, text in USER_FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, err = _run(recipe, ["--out", str(tmp_path)], capsys)
    assert code == 2 and f"--out {tmp_path} holds files this library did not write" in err
    assert len(err.strip().splitlines()) == 1
    assert {rel: (tmp_path / rel).read_text() for rel in USER_FILES} == USER_FILES
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing added either


def test_out_slash_or_home_writes_nothing(tmp_path, monkeypatch):
    from mlx_pn.io import ForeignFolderError, claim_output

    before = set(Path("/").iterdir())
    with pytest.raises(ForeignFolderError, match=r"--out / is the file system root"):
        claim_output("/")
    assert set(Path("/").iterdir()) == before
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()  # even empty: the run's folders would land in it
    with pytest.raises(ForeignFolderError, match=r"is your home folder"):
        claim_output(tmp_path / "home")
    assert not any((tmp_path / "home").iterdir())


def test_data_dir_inside_the_installed_package_is_refused(tmp_path, capsys):
    import mlx_pn

    inside = Path(mlx_pn.__file__).parent / "shards-here"
    code, err = _run("prepare", ["--out", str(tmp_path / "run"), "--data.dir", str(inside)], capsys)
    assert code == 2 and "--data.dir" in err and "inside the installed mlx_pn package" in err
    assert not inside.exists()


def test_out_that_is_a_file_or_too_long_is_one_line(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    code, err = _run("prepare", ["--out", str(f)], capsys)
    assert code == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    code, err = _run("prepare", ["--out", str(tmp_path / "run"), "--data.dir", str(f)], capsys)
    assert code == 2 and "--data.dir" in err and "is a file, not a folder" in err
    for long in (tmp_path / ("d" * 300), Path(str(tmp_path) + "/" + "/".join(["a" * 200] * 25))):
        code, err = _run("prepare", ["--out", str(long)], capsys)
        assert code == 2 and "too long for the file system" in err and len(err.strip().splitlines()) == 1


def test_enametoolong_anywhere_is_one_line():
    from mlx_pn.io import WriteError, write_error

    err = write_error(OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "d" * 300), None)
    assert isinstance(err, WriteError) and "the name is too long" in str(err) and "\n" not in str(err)


def test_a_run_this_library_made_is_claimed_again(tmp_path):
    """A fresh folder, the same folder again, and a run from before the marker (a stage folder with its .lock)."""
    from mlx_pn.io import MARKER, claim_output

    claim_output(tmp_path / "new")
    (tmp_path / "new" / "pretrain").mkdir()
    (tmp_path / "new" / "pretrain" / "summary.json").write_text("{}")
    claim_output(tmp_path / "new")  # marked: ours
    old = tmp_path / "old"
    (old / "pretrain").mkdir(parents=True)
    (old / "pretrain" / ".lock").write_text("")
    (old / "pretrain" / "summary.json").write_text("{}")
    claim_output(old)
    assert (old / MARKER).exists()
